"""The web pages (HTML, JS, CSS): package data, found by ``server.pages`` through importlib.resources, so that an
installed wheel serves the same pages as a checkout. No Python lives here."""
