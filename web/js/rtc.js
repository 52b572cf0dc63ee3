// WebRTC helpers shared by both pages: offer/answer with the server, and a readable summary of getStats().

// aiortc does not take trickled candidates: send the offer once gathering is complete (or after a short wait).
export function iceGathered(pc, timeoutMs = 2000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs);
  });
}

// Creates the offer, posts it with `post(sdp)` (which returns the server's JSON answer) and applies the answer.
export async function negotiate(pc, post) {
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc);
  const answer = await post(pc.localDescription.sdp);
  await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
  return answer;
}

// { fps, rttMs, dropped, width, height } for the incoming video; fps from decoded frames since `previous`.
export async function videoStats(pc, previous) {
  const report = await pc.getStats();
  let inbound = null;
  let pair = null;
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") inbound = s;
    if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) || pair;
  });
  if (!pair) report.forEach((s) => { if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s; });
  const now = performance.now();
  const decoded = inbound ? inbound.framesDecoded || 0 : 0;
  let fps = inbound && inbound.framesPerSecond !== undefined ? inbound.framesPerSecond : null;
  if (previous && now > previous.at) fps = ((decoded - previous.decoded) * 1000) / (now - previous.at);
  return {
    at: now,
    decoded,
    fps,
    rttMs: pair && pair.currentRoundTripTime !== undefined ? pair.currentRoundTripTime * 1000 : null,
    dropped: inbound ? inbound.framesDropped || 0 : 0,
    width: inbound ? inbound.frameWidth || 0 : 0,
    height: inbound ? inbound.frameHeight || 0 : 0,
  };
}

export function formatStats(s) {
  const fps = s.fps === null ? "–" : s.fps.toFixed(1);
  const rtt = s.rttMs === null ? "–" : s.rttMs < 10 ? s.rttMs.toFixed(1) : Math.round(s.rttMs).toString();
  const size = s.width ? `${s.width}×${s.height}` : "–";
  return { fps, rtt, dropped: String(s.dropped), size };
}
