"""Layers that are each safe but not together: links across layers in the merged /opt."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path

from helpers import Server, create_function, unique

# What a function reports about its /opt: every entry, its kind, and where links point.
LISTING = """\
import os
def handler(event, context):
    seen = {}
    for root, dirs, files in os.walk("/opt"):
        for name in dirs + files:
            path = os.path.join(root, name)
            seen[path] = ("link:" + os.readlink(path)) if os.path.islink(path) else (
                "dir" if os.path.isdir(path) else open(path).read())
    reads = {}
    for path in event.get("read", []):
        try:
            reads[path] = open(path).read()
        except OSError as error:
            reads[path] = type(error).__name__
    return {"opt": seen, "reads": reads}
"""


def layer_zip(files: dict[str, str], links: dict[str, str]) -> bytes:
    """A zip with files and symlink entries (mode S_IFLNK, the target as the content)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, content)
        for name, target in links.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.create_system = 3  # unix: external_attr carries the mode
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buffer.getvalue()


def publish(lam, files: dict[str, str], links: dict[str, str] | None = None) -> str:  # noqa: ANN001
    content = {"ZipFile": layer_zip(files, links or {})}
    return lam.publish_layer_version(LayerName=unique("lnk"), Content=content)["LayerVersionArn"]


def run(lam, layers: list[str], read: tuple[str, ...] = ()) -> dict:  # noqa: ANN001
    name = unique("opt-view")
    create_function(lam, name, layer_zip({"app.py": LISTING}, {}), Layers=layers)
    response = lam.invoke(FunctionName=name, Payload=json.dumps({"read": list(read)}).encode())
    assert "FunctionError" not in response, response["Payload"].read()
    return json.loads(response["Payload"].read())


def files_named(top: Path, name: str) -> list[Path]:
    return [Path(d, name) for d, _, files in os.walk(top) if name in files]


def test_cross_layer_link_out_of_opt_is_dropped(lam, server: Server) -> None:
    # Alone, each link stays inside its layer; together, p -> x/../../.. climbs out of /opt
    # (on the host: three levels above the merged tree, i.e. into the data dir).
    first = publish(lam, {"d1/d2/d3/keep.txt": "kept"}, {"d1/d2/d3/p": "q/../../../.."})
    second = publish(lam, {"x/ok.txt": "ok"}, {"d1/d2/d3/q": "../../../x"})
    seen = run(lam, [first, second], read=("/opt/d1/d2/d3/q/ok.txt", "/opt/d1/d2/d3/p"))
    assert "/opt/d1/d2/d3/p" not in seen["opt"]
    assert seen["opt"]["/opt/d1/d2/d3/q"] == "link:../../../x"
    assert seen["opt"]["/opt/d1/d2/d3/keep.txt"] == "kept"
    assert seen["reads"] == {"/opt/d1/d2/d3/q/ok.txt": "ok", "/opt/d1/d2/d3/p": "FileNotFoundError"}
    assert "dropped /opt/d1/d2/d3/p" in server.log()
    # The merged tree on the host has no link leading out of it.
    for merged in (server.data_dir / "blobs" / "opt").iterdir():
        for directory, dirs, files in os.walk(merged):
            for name in dirs + files:
                path = Path(directory, name)
                if path.is_symlink():
                    assert Path(os.path.realpath(path)).is_relative_to(merged), path


def test_later_layer_never_writes_through_an_earlier_link(lam, server: Server) -> None:
    escaping = publish(lam, {}, {"d1/d2/d3/p": "q/../../../.."})
    bridge = publish(lam, {}, {"d1/d2/d3/q": "../../../x"})
    marker = f"planted-{os.urandom(4).hex()}.txt"
    # Files under paths an earlier layer made links: one leading out of /opt, one inside it.
    writer = publish(lam, {f"d1/d2/d3/p/{marker}": "no", f"lib/{marker}": "lib"})
    aliased = publish(lam, {"python/orig.py": "orig"}, {"lib": "python"})
    seen = run(lam, [escaping, bridge, aliased, writer])
    opt = seen["opt"]
    # The later layer's directories replace the earlier links, path by path.
    assert opt["/opt/d1/d2/d3/p"] == "dir" and opt[f"/opt/d1/d2/d3/p/{marker}"] == "no"
    assert opt["/opt/lib"] == "dir" and opt[f"/opt/lib/{marker}"] == "lib"
    assert opt["/opt/python/orig.py"] == "orig" and f"/opt/python/{marker}" not in opt
    # On the host, the planted file exists only in the writer's own unpacked tree and in the
    # merged tree, in the directories of those names: nowhere a link led.
    blobs = server.data_dir / "blobs"
    for path in files_named(server.data_dir.parent, marker):
        assert path.is_relative_to(blobs / "unpacked") or path.is_relative_to(blobs / "opt")
        assert path.parent.name in ("p", "lib"), path
        assert not path.parent.is_symlink()
