"""A real X11 client for the capture tests, run by Debian's /usr/bin/python3 (python3-tk), never imported:

    python3 x11_window.py TITLE WxH+X+Y quadrants   four solid quadrants (QUADRANTS, clockwise from top left)
    python3 x11_window.py TITLE WxH+X+Y key         a green (#00ff00) window with a red square moving left-right

Prints "ready" once the window is mapped and drawn."""

import sys
import tkinter as tk

QUADRANTS = ("#e02020", "#2040e0", "#f0f0f0", "#f0c020")  # top left, top right, bottom right, bottom left
SUBJECT = 40  # the moving square's side, in pixels


def main() -> None:
    title, geometry, mode = sys.argv[1:4]
    root = tk.Tk()
    root.title(title)
    root.geometry(geometry)
    canvas = tk.Canvas(root, highlightthickness=0, borderwidth=0, background="#00ff00")
    canvas.pack(fill="both", expand=True)
    if mode == "quadrants":
        big = 4000  # each quadrant drawn large, so a resized window stays four solid quadrants
        canvas.bind("<Configure>", lambda e: draw_quadrants(canvas, e.width, e.height, big))
    else:
        square = canvas.create_rectangle(0, 20, SUBJECT, 20 + SUBJECT, fill="#d02020", outline="")
        move(root, canvas, square, 0, 4)
    root.after(200, lambda: print("ready", flush=True))
    root.mainloop()


def draw_quadrants(canvas: tk.Canvas, width: int, height: int, big: int) -> None:
    canvas.delete("all")
    cx, cy = width // 2, height // 2
    boxes = ((0, 0, cx, cy), (cx, 0, big, cy), (cx, cy, big, big), (0, cy, cx, big))
    for (x0, y0, x1, y1), colour in zip(boxes, QUADRANTS):
        canvas.create_rectangle(x0, y0, x1, y1, fill=colour, outline="")


def move(root: tk.Tk, canvas: tk.Canvas, square: int, x: int, step: int) -> None:
    width = canvas.winfo_width()
    if not 0 <= x + step <= max(width - SUBJECT, 0):
        step = -step
    canvas.move(square, step, 0)
    root.after(30, move, root, canvas, square, x + step, step)


if __name__ == "__main__":
    main()
