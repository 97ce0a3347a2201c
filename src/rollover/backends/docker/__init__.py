"""The Docker Engine backend: label-selected containers and Compose v2 services."""
