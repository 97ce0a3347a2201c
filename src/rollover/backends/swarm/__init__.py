"""The Docker Swarm backend: replicated and global services, paced through Swarm's own updater."""
