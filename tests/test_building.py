"""Building on a machine that lacks something, and a module built for another nginx.

`make` checks the Rust toolchain before anything else and says what is missing and how
to get it; nginx refuses a module built for another version with its own message. (The
Debian packages have their own test, scripts/deb-test.sh: `make deb-test`.)
"""

import os
import re
import shutil
import struct
import subprocess

from conftest import MODULE, ROOT


def rust_version_required():
    return re.search(r'^rust-version = "([0-9.]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)


def run_make(target, path, tmp_path):
    """`make TARGET` in the repository with PATH as given (and nothing of rustup's)."""
    env = {"PATH": path, "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    return subprocess.run(["make", "--no-print-directory", target], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_make_without_cargo_says_how_to_get_rust(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A PATH with make, sh, sed... but no cargo (a fresh Debian 12 has none).
    for tool in ("make", "bash", "sh", "sed", "sort", "head", "dirname"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    out = run_make("build", str(bin_dir), tmp_path)
    assert out.returncode != 0
    # What the user sees: what is missing, the version needed, and the commands to run.
    assert "cargo (Rust's build tool) was not found on PATH" in out.stderr
    assert f"Rust >= {rust_version_required()} is installed with rustup" in out.stderr
    assert "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh" in out.stderr
    assert "Debian 12's rustc is 1.63" in out.stderr
    # It stopped before anything else ran (no apt, no cargo, no nginx configure).
    assert "setup:" not in out.stdout + out.stderr
    assert "No such file or directory" not in out.stderr
    # The README's two commands too: before installing anything.
    for target in ("demo", "test"):
        out = run_make(target, str(bin_dir), tmp_path)
        assert out.returncode != 0 and "cargo (Rust's build tool) was not found" in out.stderr, target
        assert "setup:" not in out.stdout + out.stderr, target


def test_make_with_debians_old_rustc_names_both_versions(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("make", "bash", "sh", "sed", "sort", "head", "dirname"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    # Debian 12's cargo and rustc print these versions (1.63.0).
    (bin_dir / "cargo").write_text("#!/bin/sh\necho 'cargo 1.65.0'\n")
    (bin_dir / "rustc").write_text("#!/bin/sh\necho 'rustc 1.63.0'\n")
    for tool in ("cargo", "rustc"):
        (bin_dir / tool).chmod(0o755)
    out = run_make("build", str(bin_dir), tmp_path)
    assert out.returncode != 0
    required = rust_version_required()
    assert f"rustc 1.63.0 ({bin_dir}/rustc) is older than the {required} ngx-wsgi needs" in out.stderr
    assert "https://sh.rustup.rs" in out.stderr


def test_make_accepts_this_machines_toolchain(tmp_path):
    out = subprocess.run(["make", "--no-print-directory", "toolchain"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""


def with_version(module_bytes, built_for, claimed):
    """The module's bytes with its ngx_module_t claiming nginx version `claimed`.

    The struct starts ctx_index, index (both NGX_MODULE_UNSET_INDEX, all ones), name,
    spare0, spare1, version: the version word follows 16 bytes of 0xff, a pointer and two
    zero words. There is exactly one such place (the module's one ngx_module_t)."""
    pattern = re.compile(rb"\xff{16}.{8}\x00{16}" + re.escape(struct.pack("<Q", built_for)), re.S)
    found = list(pattern.finditer(module_bytes))
    assert len(found) == 1, f"{len(found)} ngx_module_t candidates"
    at = found[0].end() - 8
    return module_bytes[:at] + struct.pack("<Q", claimed) + module_bytes[at + 8:]


def nginx_version_number():
    version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
    major, minor, patch = map(int, re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version).groups())
    return major * 1000000 + minor * 1000 + patch


def test_a_module_built_for_another_nginx_version_is_refused_with_nginxs_message(tmp_path):
    ours = nginx_version_number()
    other = ours + 3002  # e.g. 1.22.1 -> 1.25.3
    module = tmp_path / "ngx_http_wsgi_module.so"
    module.write_bytes(with_version(open(MODULE, "rb").read(), ours, other))
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"load_module {module};\nevents {{}}\nhttp {{}}\n")
    out = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 1
    # nginx's own words, naming both versions and the file.
    assert f'module "{module}" version {other} instead of {ours}' in out.stderr
    # The same file with its own version loads: the patch changed nothing else.
    module.write_bytes(open(MODULE, "rb").read())
    out = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 0, out.stderr
