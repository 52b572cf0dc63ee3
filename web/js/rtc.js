// WebRTC helpers shared by both pages: offer/answer with the server, its STUN/TURN servers (and ?relay=1), and a
// readable summary of getStats().

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
// Under iceTransportPolicy "relay" an offer without a relay candidate could never connect: IceFailure says why.
export async function negotiate(pc, post) {
  const errors = [];
  pc.addEventListener("icecandidateerror", (e) => errors.push({ url: e.url, code: e.errorCode, text: e.errorText }));
  const relay = pc.getConfiguration().iceTransportPolicy === "relay";
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc, relay ? RELAY_GATHER_MS : 2000);
  if (relay && !/ typ relay/.test(pc.localDescription.sdp)) {
    throw new IceFailure("No relayed connection", describeCandidateErrors(errors));
  }
  const answer = await post(pc.localDescription.sdp);
  await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
  return answer;
}

// ---- STUN/TURN: the server's ICE servers, and ?relay=1 ------------------------------------------------------

const RELAY_GATHER_MS = 5000; // a TURN allocation over the internet takes a few round trips

// ?relay=1 in a page's address sends all media through the server's TURN server (iceTransportPolicy "relay"):
// a check that a TURN setup works for clients behind NAT (docs/deploy.md).
export const relayForced = () => new URLSearchParams(location.search).get("relay") === "1";

// A connection that cannot be made as configured; `title` and `detail` are for people.
export class IceFailure extends Error {
  constructor(title, detail) {
    super(detail);
    this.title = title;
    this.detail = detail;
  }
}

// The RTCPeerConnection configuration from GET /ice-servers's answer (STUN/TURN servers, fresh TURN credentials).
export function rtcConfiguration(servers, relay = relayForced()) {
  if (relay && !servers.relay) {
    throw new IceFailure("No TURN server", "This page was opened with ?relay=1, but the server has no TURN server: " +
                         "start it with --ice-server turn:HOST:3478 and --turn-secret (docs/deploy.md).");
  }
  return { iceServers: servers.ice_servers, iceTransportPolicy: relay ? "relay" : "all" };
}

function describeCandidateErrors(errors) {
  const turn = errors.filter((e) => /^turns?:/.test(e.url || ""));
  if (!turn.length) return "The server's TURN server gave this browser no relay address (no error was reported).";
  return turn.map((e) => {
    if (e.code === 401) {
      return `The TURN server ${e.url} refused the credentials (401 ${(e.text || "").replace(/\.$/, "")}): the server's --turn-secret must ` +
             "equal the TURN server's static-auth-secret (or --turn-username/--turn-credential must match its user).";
    }
    if (e.code === 701) {
      return `The TURN server ${e.url} did not answer: is it running, and are its ports open (3478 UDP/TCP, ` +
             "443 for turns:)?";
    }
    return `The TURN server ${e.url} failed: ${e.code} ${e.text}.`;
  }).filter((line, i, all) => all.indexOf(line) === i).join(" ");
}

// { fps, rttMs, dropped, width, height, route } for the incoming video; fps from decoded frames since `previous`.
export async function videoStats(pc, previous) {
  const report = await pc.getStats();
  let inbound = null;
  let pair = null;
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") inbound = s;
    if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) || pair;
  });
  if (!pair) report.forEach((s) => { if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s; });
  const local = pair && pair.localCandidateId ? report.get(pair.localCandidateId) : null;
  const remote = pair && pair.remoteCandidateId ? report.get(pair.remoteCandidateId) : null;
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
    route: routeOf(local, remote),
  };
}

// "relay" when a TURN server carries the media (this browser's or the server's), else this side's candidate type
function routeOf(local, remote) {
  if (!local) return null;
  if (local.candidateType === "relay" || (remote && remote.candidateType === "relay")) return "relay";
  return local.candidateType;
}

export function formatStats(s) {
  const fps = s.fps === null ? "–" : s.fps.toFixed(1);
  const rtt = s.rttMs === null ? "–" : s.rttMs < 10 ? s.rttMs.toFixed(1) : Math.round(s.rttMs).toString();
  const size = s.width ? `${s.width}×${s.height}` : "–";
  return { fps, rtt, dropped: String(s.dropped), size, route: s.route || "–" };
}
