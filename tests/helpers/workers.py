"""Watching a real gunicorn's workers come and go."""


def workers_seen(server, *, beyond_now: int = 0, in_all: int = 0):
    """A condition for wait_for: true once the workers seen (each look adds the master's children
    of the moment) number ``beyond_now`` more than those alive now, and ``in_all`` at least."""
    seen = set(server.worker_pids())
    wanted = max(len(seen) + beyond_now, in_all)

    def enough() -> bool:
        seen.update(server.worker_pids())
        return len(seen) >= wanted

    return enough
