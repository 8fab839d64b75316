"""The web page: real HTTP requests to a real `bgremover web`, and a real browser."""
