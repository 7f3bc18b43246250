"""The review console (`guardstream review serve`): reviewers work the review queue in a browser.

Server-rendered pages (FastAPI, Jinja2 with autoescaping) and one small script for the keyboard;
no inline script or style, so a strict Content-Security-Policy holds. See docs/review.md.
"""
