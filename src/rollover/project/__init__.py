"""`rollover up`: a whole Compose project, each service with the right action, in dependency order."""
