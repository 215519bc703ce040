"""ImageNet ResNet weights by name: ``model.pretrained: imagenet`` (= ``imagenet-v1``) or ``imagenet-v2``.

A name resolves to torchvision's published file for the architecture, by its official URL
and file name. The file lives in torch hub's cache (``torch.hub.get_dir()/checkpoints``,
i.e. ``$TORCH_HOME/hub/checkpoints``), where torchvision and the papers' code keep it too,
so a machine that already has it downloads nothing. A missing file is downloaded with
torch.hub's own function (progress bar, a temporary name in the same folder, moved into
place only after its sha256 matched); a cached file is checked the same way before use.
torch.hub's convention: the hex digits after the last ``-`` of the name are the prefix of
the file's sha256. Every failure is one line naming the file, the URL and the folder.
"""

from __future__ import annotations

import re
import sys
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError, URLError

import torch

from crossreid.errors import UserError
from crossreid.io import file_sha256

SCRATCH = "none"  # model.pretrained: none = train the backbone from random initialisation, said explicitly
# Name -> architecture -> URL. V1: the files torchvision served before 0.13, which the papers' code
# (AGW, IDKL, Hafner et al.'s open-reid) downloaded; V2: torchvision's IMAGENET1K_V2 (ResNet-50 only).
IMAGENET: dict[str, dict[str, str]] = {
    "imagenet-v1": {
        "resnet18": "https://download.pytorch.org/models/resnet18-5c106cde.pth",
        "resnet34": "https://download.pytorch.org/models/resnet34-333f7ec4.pth",
        "resnet50": "https://download.pytorch.org/models/resnet50-19c8e357.pth",
    },
    "imagenet-v2": {
        "resnet50": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    },
}
ALIASES = {"imagenet": "imagenet-v1"}
_HASH = re.compile(r"-([0-9a-f]{8,})\.[^.]+$")


def known_names() -> list[str]:
    return [*ALIASES, *IMAGENET, SCRATCH]


def canonical(pretrained: str | None) -> str | None:
    """The canonical name of a named initialisation (``imagenet`` -> ``imagenet-v1``), else None."""
    if pretrained is None:
        return None
    name = ALIASES.get(pretrained, pretrained)
    return name if name in IMAGENET or name == SCRATCH else None


def checkpoints_dir() -> Path:
    """torch hub's weights folder (``$TORCH_HOME/hub/checkpoints``), read when called."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def published_url(name: str, arch: str) -> str:
    """The URL of the file ``name`` (canonical) names for ``arch``; a UserError if it has none."""
    urls = IMAGENET[name]
    if arch not in urls:
        others = [n for n, table in IMAGENET.items() if arch in table]
        raise UserError(f"model.pretrained={name}: torchvision publishes {name} weights for "
                        f"{', '.join(urls)} only, not {arch}; use model.pretrained={others[0] if others else 'none'}")
    return urls[arch]


def resolve_pretrained(pretrained: str | None, arch: str, progress: bool = True) -> Path | None:
    """The local weights file ``model.pretrained`` means for ``arch`` (None: from scratch).

    A name is fetched into the hub cache if needed; anything else is a local file path.
    """
    if pretrained is None:
        return None
    name = canonical(pretrained)
    if name == SCRATCH:
        return None
    if name is not None:
        return fetch(published_url(name, arch), progress)
    path = Path(pretrained).expanduser()
    if not path.exists() and pretrained.lower().startswith("imagenet"):
        raise UserError(f"model.pretrained={pretrained}: no such name or file; use one of "
                        f"{', '.join(known_names())} or a weights file path")
    return path


def fetch(url: str, progress: bool = True) -> Path:
    """The published file at ``url`` in the hub cache, downloaded if missing; its sha256 is checked."""
    name = url.rsplit("/", 1)[-1]
    folder = checkpoints_dir()
    path = folder / name
    prefix = _HASH.search(name)
    if path.is_file():
        if prefix and not file_sha256(path).startswith(prefix.group(1)):
            raise UserError(f"{path}: its sha256 does not start with {prefix.group(1)}, the prefix in its "
                            f"published name: a partial or corrupt copy; delete it to download it again, or "
                            f"copy the file from {url} there")
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), prefix.group(1) if prefix else None, progress=progress)
    except RuntimeError as exc:  # torch.hub's hash check; the partial file is already removed
        raise UserError(f"{name}: the download from {url} is corrupt or incomplete: its sha256 does not start "
                        f"with the prefix in its name ({exc}); nothing was kept; try again, or download it by hand "
                        f"into {folder}/") from None
    except (URLError, HTTPException, OSError, ValueError) as exc:
        reason = f"HTTP {exc.code}" if isinstance(exc, HTTPError) else getattr(exc, "reason", None) or exc
        raise UserError(f"{name}: cannot download {url} ({reason}); on a machine with network access "
                        f"download that URL and put the file, named {name}, in {folder}/") from None
    if progress:
        print(f"downloaded {name} from {url} into {folder} (sha256 prefix checked)", file=sys.stderr)
    return path
