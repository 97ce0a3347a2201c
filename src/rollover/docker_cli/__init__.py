"""rollover inside the docker CLI: engine endpoints (contexts, -H, ssh://), the plugin protocol, the
plugin's installation, shell completion."""
