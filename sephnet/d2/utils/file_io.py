"""The core's ``PathManager``: iopath with local, http(s), OneDrive and ``detectron2://`` paths.

``detectron2://X`` resolves to ``https://dl.fbaipublicfiles.com/detectron2/X`` (model-zoo
weights and configs). A download that fails raises :class:`DownloadError`, an ``OSError``
naming the URL and saying that this machine may have no network.
"""

import logging
from typing import Any, List

from iopath.common.file_io import HTTPURLHandler, OneDrivePathHandler, PathHandler
from iopath.common.file_io import PathManager as PathManagerBase

__all__ = ["PathManager", "PathHandler", "DownloadError"]

logger = logging.getLogger(__name__)


class DownloadError(OSError):
    """A remote file could not be fetched (usually: no network)."""


class _ReportingHTTPURLHandler(HTTPURLHandler):
    """iopath's http(s) handler, but a failed download names the URL and the likely cause."""

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        try:
            return super()._get_local_path(path, force=force, **kwargs)
        except Exception as e:  # urllib raises URLError, HTTPError, socket errors, ...
            raise DownloadError(
                f"Cannot download {path}: {type(e).__name__}: {e}. This machine probably has "
                "no network access; download the file elsewhere and pass its local path."
            ) from e


class Detectron2Handler(PathHandler):
    """Maps ``detectron2://X`` to detectron2's public file server and fetches from there."""

    PREFIX = "detectron2://"
    S3_DETECTRON2_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"

    def _get_supported_prefixes(self) -> List[str]:
        return [self.PREFIX]

    def _get_local_path(self, path: str, **kwargs: Any) -> str:
        url = self.S3_DETECTRON2_PREFIX + path[len(self.PREFIX) :]
        return PathManager.get_local_path(url, **kwargs)

    def _open(self, path: str, mode: str = "r", **kwargs: Any) -> Any:
        return PathManager.open(self._get_local_path(path), mode, **kwargs)


PathManager = PathManagerBase()
"""The core's own path manager (kept apart from fvcore's global one to avoid handler clashes)."""

PathManager.register_handler(_ReportingHTTPURLHandler())
PathManager.register_handler(OneDrivePathHandler())
PathManager.register_handler(Detectron2Handler())
