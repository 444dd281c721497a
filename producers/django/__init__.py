"""SmartStream for Django sites: add ``"producers.django"`` to INSTALLED_APPS (app label
``smartstream``) and a ``SMARTSTREAM`` dict to settings.py (keys in :mod:`producers.django.conf`).

* ``{% load smartstream %}{% smartstream_beacon "A" %}``: the time-on-page beacon of the page.
* :mod:`producers.django.events`: page views, new users and comments from views, never blocking.
* :mod:`producers.django.readers`: a user's cluster and a comment's label, one Redis round trip.
"""
