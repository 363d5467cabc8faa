"""Every ``.pt`` the app writes passes A1111's safe loader (modules/safe.py), still loads with
``torch.load(weights_only=True)`` (ComfyUI, diffusers), is byte-for-byte reproducible and has the
embedding's name as its zip folder; exported files all get the same permissions."""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import sys
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from charstudio.catalog import Project  # noqa: E402
from charstudio.engine.embeddings import load_embedding, save_a1111_pt  # noqa: E402
from charstudio.engine.pt_files import rewrite_torch_zip, zip_folder_name  # noqa: E402
from charstudio.training import records  # noqa: E402
from charstudio.training.export import export_embedding  # noqa: E402
from charstudio.training.run_files import latest_state, save_checkpoint, save_state  # noqa: E402

# A1111's check_zip_filenames: every entry of the zip must match. Older versions:
A1111_OLD = re.compile(r"^([^/]+)/((data/\d+)|version|(data\.pkl))$")
# Newer versions (byteorder and .data/serialization_id added; the "." is unescaped there too):
A1111_NEW = re.compile(
    r"^([^/]+)/((data/\d+)|version|byteorder|.data/serialization_id|(data\.pkl))$"
)
A1111_DATA_PKL = re.compile(r"^([^/]+)/data\.pkl$")

# What A1111's RestrictedUnpickler.find_class lets through in its oldest (narrowest) form.
A1111_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"),
    ("torch", "HalfStorage"),
    ("torch", "IntStorage"),
    ("torch", "LongStorage"),
    ("torch", "DoubleStorage"),
}


class A1111Unpickler(pickle.Unpickler):
    """A1111's check: storages are stand-ins (persistent ids must be ``('storage', ...)``) and
    any global outside its allow-list is refused."""

    def persistent_load(self, saved_id: tuple) -> object:
        assert saved_id[0] == "storage"
        return torch.storage.TypedStorage(_internal=True)

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in A1111_GLOBALS:
            raise pickle.UnpicklingError(f"global '{module}/{name}' is forbidden")
        if module == "collections":
            return collections.OrderedDict
        return getattr(torch._utils if module == "torch._utils" else torch, name)


def a1111_check(data: bytes) -> list[str]:
    """A1111's check_pt on a file's bytes; returns the entry names. Raises what A1111 would."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        for name in names:
            if not A1111_OLD.match(name):
                raise AssertionError(f"bad file inside (old A1111): {name}")
            if not A1111_NEW.match(name):
                raise AssertionError(f"bad file inside (new A1111): {name}")
        pickles = [n for n in names if A1111_DATA_PKL.match(n)]
        assert len(pickles) == 1, pickles
        with archive.open(pickles[0]) as fh:
            A1111Unpickler(fh).load()
    return names


def vectors(n: int = 2, width: int = 768, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def test_plain_torch_save_is_what_a1111_refuses() -> None:
    """The reason for all this: torch's own zip has entries A1111 refuses."""
    buffer = io.BytesIO()
    torch.save({"x": vectors(1)}, buffer)
    with pytest.raises(AssertionError, match=r"bad file inside \(old A1111\): archive/\.format"):
        a1111_check(buffer.getvalue())
    # and the stand-in unpickler refuses what A1111's refuses
    with pytest.raises(pickle.UnpicklingError, match="collections/Counter"):
        A1111Unpickler(io.BytesIO(pickle.dumps(collections.Counter()))).load()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_embedding_pt_passes_a1111s_safe_loader(tmp_path: Path, dtype: torch.dtype) -> None:
    vec = vectors(2).to(dtype)
    path = save_a1111_pt(tmp_path / "fr3nch-40.pt", "fr3nch-40", vec, 40, "6ce0161689", "v1-5")
    names = a1111_check(path.read_bytes())
    assert names == ["fr3nch-40/data.pkl", "fr3nch-40/data/0", "fr3nch-40/version"]

    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(raw["string_to_param"]["*"], vec.float())
    assert raw["string_to_token"] == {"*": 265} and raw["name"] == "fr3nch-40"
    mapped = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    assert torch.equal(mapped["string_to_param"]["*"], vec.float())
    assert torch.equal(load_embedding(path).vectors, vec.float())


def test_the_zip_folder_is_the_embedding_name(tmp_path: Path) -> None:
    path = save_a1111_pt(tmp_path / "file-name.pt", "Fr3nch Lady", vectors(1))
    with zipfile.ZipFile(path) as archive:
        assert {n.split("/")[0] for n in archive.namelist()} == {"Fr3nch Lady"}
    # Names a zip folder cannot hold are made safe, and A1111 still accepts the file.
    odd = save_a1111_pt(tmp_path / "odd.pt", "a/b\\c\nd", vectors(1))
    with zipfile.ZipFile(odd) as archive:
        assert {n.split("/")[0] for n in archive.namelist()} == {"a_b_c_d"}
    a1111_check(odd.read_bytes())
    assert torch.load(odd, weights_only=True)["name"] == "a/b\\c\nd"  # the name itself is kept
    unicode = save_a1111_pt(tmp_path / "u.pt", "fr3nché", vectors(1))
    a1111_check(unicode.read_bytes())
    with zipfile.ZipFile(unicode) as archive:
        assert archive.namelist()[0] == "fr3nché/data.pkl"
    assert torch.load(unicode, weights_only=True)["name"] == "fr3nché"
    assert zip_folder_name("..") == zip_folder_name("") == "archive"
    assert zip_folder_name("x" * 300) == "x" * 100


def test_the_same_embedding_gives_the_same_bytes(tmp_path: Path) -> None:
    a = save_a1111_pt(tmp_path / "a" / "n.pt", "n", vectors(2), 10, "abc", "m")
    b = save_a1111_pt(tmp_path / "b" / "n.pt", "n", vectors(2), 10, "abc", "m")
    assert a.read_bytes() == b.read_bytes()
    c = save_a1111_pt(tmp_path / "c" / "n.pt", "n", vectors(2), 11, "abc", "m")
    assert c.read_bytes() != a.read_bytes()


def test_data_is_aligned_as_torch_aligns_it(tmp_path: Path) -> None:
    path = save_a1111_pt(tmp_path / "n.pt", "n", vectors(3))
    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            offset = info.header_offset
            name_len = int.from_bytes(data[offset + 26 : offset + 28], "little")
            extra_len = int.from_bytes(data[offset + 28 : offset + 30], "little")
            assert (offset + 30 + name_len + extra_len) % 64 == 0, info.filename


def test_run_checkpoints_and_resume_states_pass_too(tmp_path: Path) -> None:
    saved = save_checkpoint(
        tmp_path, "zxq", 20, vectors(2), model_hash="0123456789", model_name="v1-5"
    )
    assert a1111_check(saved.pt.read_bytes())[0] == "zxq-20/data.pkl"
    state = {
        "step": 3,
        "vectors": vectors(2),
        "optimizer": {"state": {0: {"exp_avg": vectors(2)}}},
        "losses": [0.5, 0.25],
    }
    path = save_state(tmp_path, 3, state)
    with zipfile.ZipFile(path) as archive:
        assert all(A1111_OLD.match(n) and A1111_NEW.match(n) for n in archive.namelist())
    loaded = latest_state(tmp_path)
    assert loaded is not None and torch.equal(
        loaded["optimizer"]["state"][0]["exp_avg"], vectors(2)
    )


def test_records_outside_a1111s_list_are_refused_not_dropped() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({}))
        archive.writestr("archive/extra_thing", b"?")
    with pytest.raises(ValueError, match="extra_thing"):
        rewrite_torch_zip(buffer.getvalue(), "n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({}))
        archive.writestr("archive/byteorder", b"big")
    with pytest.raises(ValueError, match="byteorder"):
        rewrite_torch_zip(buffer.getvalue(), "n")


# -- exports -----------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path):
    with Project.create(tmp_path / "proj", "Zxq", "zxq") as project:
        folder = "runs/ti-001-zxq"
        params = {"model_hash": "0123456789", "model_name": "tiny-sd"}
        run_id = records.create_run(
            project.catalog, name="zxq", folder=folder, params=params, job_id=None
        )
        path = save_a1111_pt(project.root / folder / "zxq-20.pt", "zxq-20", vectors(2), step=20)
        records.record_checkpoint(
            project.catalog, run_id, 20, f"{folder}/{path.name}", 0.1, "0" * 64
        )
        project.run_id = run_id  # type: ignore[attr-defined]
        yield project


def test_export_pt_has_the_export_name_and_passes_a1111(project: Project, tmp_path: Path) -> None:
    run_id = project.run_id  # type: ignore[attr-defined]
    result = export_embedding(project, run_id, 20, folders=[tmp_path / "a1111"], name="Fr3nch Lady")
    pts = [Path(f) for f in result.files if f.endswith(".pt")]
    assert len(pts) == 2
    for pt in pts:
        names = a1111_check(pt.read_bytes())
        assert {n.split("/")[0] for n in names} == {"Fr3nch Lady"}
        raw = torch.load(pt, weights_only=True)
        assert (raw["name"], raw["step"], raw["sd_checkpoint"]) == ("Fr3nch Lady", 20, "0123456789")
    assert pts[0].read_bytes() == pts[1].read_bytes()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_exported_files_all_get_the_same_permissions(
    project: Project, tmp_path: Path, umask: int
) -> None:
    run_id = project.run_id  # type: ignore[attr-defined]
    old = os.umask(umask)
    try:
        result = export_embedding(project, run_id, 20, folders=[tmp_path / "comfy"])
    finally:
        os.umask(old)
    modes = {Path(f).name: os.stat(f).st_mode & 0o777 for f in result.files}
    assert {Path(f).suffix for f in result.files} == {".pt", ".safetensors"}
    assert set(modes.values()) == {0o666 & ~umask}, {k: oct(v) for k, v in modes.items()}
