"""Views of the typed decoding results: the answer trace (HTML page per answer) and the server's playground."""
