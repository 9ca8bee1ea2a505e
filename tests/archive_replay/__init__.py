"""Local replay servers (127.0.0.1 only) for testing ``mdslam.archive`` without the internet."""

from .archives import MIRROR, archive_server
from .server import Fault, ReplayServer, Reply, Request, gzipped

__all__ = ["MIRROR", "archive_server", "ReplayServer", "Reply", "Request", "Fault", "gzipped"]
