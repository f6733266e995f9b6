"""The design's hard rule, checked on what was built: LibTorch and gRPC/protobuf/spdlog never meet
in one translation unit or one binary (LibTorch carries its own protobuf and fmt; mixing them
fails to compile, or worse, links and misbehaves)."""
import re
import subprocess
from pathlib import Path

from conftest import REPO, binary

SERVICE_HEADERS = re.compile(r'#\s*include\s*[<"](grpcpp?/|google/protobuf/|spdlog/|.*\.pb\.h)')
TORCH_HEADERS = re.compile(r'#\s*include\s*[<"](torch/|ATen/|c10/)')
TORCH_SIDE_INCLUDES = re.compile(r'#\s*include\s*"(kernels/torch/|worker/trainer/)')


def linked_libraries(path: Path) -> str:
    return subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=True).stdout


def test_service_binaries_do_not_link_libtorch():
    for name in ("qlorad", "qlorad-worker", "qloractl"):
        libs = linked_libraries(binary(name))
        assert "libgrpc" in libs, f"{name} should link gRPC:\n{libs}"
        assert not re.search(r"libtorch|libc10", libs), f"{name} links LibTorch:\n{libs}"


def test_the_trainer_does_not_link_grpc_protobuf_or_spdlog():
    libs = linked_libraries(binary("qlorad-train"))
    assert "libtorch" in libs or "libc10" in libs, libs
    for forbidden in ("libgrpc", "libprotobuf", "libspdlog"):
        assert forbidden not in libs, f"qlorad-train links {forbidden}:\n{libs}"


def test_no_source_file_includes_both_worlds():
    sources = [p for p in REPO.rglob("*") if p.suffix in {".h", ".cc", ".cu", ".cuh"}
               and not any(part.startswith("build") for part in p.relative_to(REPO).parts)]
    assert len(sources) > 50
    mixed = []
    for path in sources:
        text = path.read_text(errors="replace")
        torch_side = TORCH_HEADERS.search(text) or TORCH_SIDE_INCLUDES.search(text)
        if torch_side and SERVICE_HEADERS.search(text):
            mixed.append(str(path.relative_to(REPO)))
    assert mixed == [], f"files that include both torch and gRPC/protobuf/spdlog headers: {mixed}"
