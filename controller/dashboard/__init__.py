"""The web dashboard (/ui/) and the API's docs (/docs), every asset served by the
controller itself: no page loads anything from another origin.

`session.py` says who is looking (the token cookie) and guards form posts, `views.py`
decides what each page shows over the API's use-cases, `chart.py` draws the fleet's
charts as SVG geometry, `routes.py` serves the pages from `templates/` and `static/`,
`apidocs.py` serves Swagger UI from a local copy.
"""
