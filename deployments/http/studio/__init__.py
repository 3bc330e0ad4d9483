"""The studio: a web page over the HTTP API, served by the ingress at `/studio` (`routes.py`).

The page is plain HTML, CSS and ES modules in `static/` (no build step); it reaches the API from the
browser with the key the user enters, and reads results from their presigned URLs.
"""
