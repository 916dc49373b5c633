"""The studio: attnlab's second front door, a local web app (``attnlab studio``) that parses,
calls the library and draws; one router per screen."""
