"""Tests of ``python -m sasrec download`` against a local HTTP server (never the internet)."""

from __future__ import annotations

import argparse
import io
import logging
import re
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pytest

from sasrec.data import kuairec
from sasrec.data.kuairec import download
from sasrec.errors import ConfigError, DataValidationError, SasrecError

ROWS_PER_FILE = 2


def tiny_csv(schema: kuairec.FileSchema, rows: int = ROWS_PER_FILE) -> str:
    """A schema-correct CSV with ``rows`` rows (ids 0..rows-1)."""
    lines = [",".join(schema.column_names)]
    for row in range(rows):
        values = []
        for name, typ in schema.columns:
            if name in schema.int_lists:
                values.append('"[1, 2]"')
            elif pa.types.is_integer(typ):
                values.append(str(row))
            elif pa.types.is_floating(typ):
                values.append("1.5")
            else:
                values.append("text")
        lines.append(",".join(values))
    return "\n".join(lines) + "\n"


def build_archive(extra: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, schema in kuairec.OFFICIAL_FILES.items():
            bundle.writestr(f"KuaiRec 2.0/data/{name}", tiny_csv(schema))
        for name, text in (extra or {}).items():
            bundle.writestr(name, text)
    return buffer.getvalue()


@dataclass
class Served:
    payload: bytes
    content_type: str = "application/zip"
    honour_range: bool = True
    ranges: list[str | None] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    served: Served

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        served = self.server.served  # type: ignore[attr-defined]
        header = self.headers.get("Range")
        served.ranges.append(header)
        body, status = served.payload, 200
        match = re.fullmatch(r"bytes=(\d+)-", header or "")
        if match and served.honour_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            status = 206
            self.send_response(status)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            self.send_response(status)
        self.send_header("Content-Type", served.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # silence the test output
        return


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served(payload=build_archive())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.served = served  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/KuaiRec.zip", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/KuaiRec.zip"


def test_download_unzip_and_validate(tmp_path: Path, server: tuple[str, Served]) -> None:
    url, served = server
    dest = tmp_path / "raw"
    data_dir = download.download_kuairec(dest, [url], check_rows=False, timeout=5, progress=False)
    assert data_dir == dest / "KuaiRec 2.0" / "data"
    assert (dest / "KuaiRec.zip").read_bytes() == served.payload
    assert not (dest / "KuaiRec.zip.part").exists()
    for name in kuairec.OFFICIAL_FILES:
        assert (data_dir / name).is_file()
    results = download.verify_files(data_dir, check_rows=False)
    assert {r.name: r.rows for r in results} == dict.fromkeys(kuairec.OFFICIAL_FILES, ROWS_PER_FILE)
    summary = kuairec.validate_directory(dest, cache=False)  # the tiny files pass the full validation too
    assert summary.absent == []
    # A second call finds the unpacked files and does not contact the server again.
    requests = len(served.ranges)
    assert download.download_kuairec(dest, [url], check_rows=False, progress=False) == data_dir
    assert len(served.ranges) == requests


def test_row_check_rejects_small_files(tmp_path: Path, server: tuple[str, Served]) -> None:
    url, _ = server
    with pytest.raises(DataValidationError) as info:
        download.download_kuairec(tmp_path, [url], timeout=5, progress=False)
    message = str(info.value)
    assert "big_matrix.csv has 2 rows, expected 12,530,806" in message
    assert "item_daily_features.csv" not in message  # approximate official count: a note only
    assert "--skip-row-check" in message


def test_resume_from_partial_file(tmp_path: Path, server: tuple[str, Served]) -> None:
    url, served = server
    part = tmp_path / "KuaiRec.zip.part"
    part.write_bytes(served.payload[:100])
    download.download_kuairec(tmp_path, [url], check_rows=False, timeout=5, progress=False)
    assert served.ranges == ["bytes=100-"]
    assert (tmp_path / "KuaiRec.zip").read_bytes() == served.payload


def test_restart_when_server_ignores_range(tmp_path: Path, server: tuple[str, Served]) -> None:
    url, served = server
    served.honour_range = False
    (tmp_path / "KuaiRec.zip.part").write_bytes(b"garbage from another file")
    download.download_kuairec(tmp_path, [url], check_rows=False, timeout=5, progress=False)
    assert served.ranges == ["bytes=25-"]
    assert (tmp_path / "KuaiRec.zip").read_bytes() == served.payload


def test_complete_part_file_is_used(tmp_path: Path, server: tuple[str, Served]) -> None:
    url, served = server
    (tmp_path / "KuaiRec.zip.part").write_bytes(served.payload)
    download.download_kuairec(tmp_path, [url], check_rows=False, timeout=5, progress=False)
    assert served.ranges == [f"bytes={len(served.payload)}-"]  # answered 416: nothing left to fetch
    assert (tmp_path / "KuaiRec.zip").read_bytes() == served.payload


def test_offline_error_names_urls_and_manual_route(tmp_path: Path) -> None:
    urls = [closed_port_url(), closed_port_url()]
    with pytest.raises(SasrecError) as info:
        download.download_kuairec(tmp_path, urls, timeout=2, progress=False)
    message = str(info.value)
    for url in urls:
        assert url in message
    assert "offline" in message
    assert "python -m sasrec download --archive PATH" in message and "make data ARCHIVE=PATH" in message
    assert "\n" not in message
    assert not (tmp_path / "KuaiRec.zip").exists()


def test_html_page_is_not_an_archive(tmp_path: Path, server: tuple[str, Served]) -> None:
    url, served = server
    served.payload, served.content_type = b"<html><body>quota exceeded</body></html>", "text/html"
    with pytest.raises(SasrecError, match="HTML page"):
        download.download_kuairec(tmp_path, [url], timeout=5, progress=False)


def test_non_zip_body_is_rejected(tmp_path: Path, server: tuple[str, Served]) -> None:
    url, served = server
    served.payload = b"not a zip at all"
    with pytest.raises(SasrecError, match="not a zip archive"):
        download.download_kuairec(tmp_path, [url], timeout=5, progress=False)
    assert not (tmp_path / "KuaiRec.zip.part").exists()


def test_archive_option_needs_no_network(tmp_path: Path) -> None:
    archive = tmp_path / "elsewhere.zip"
    archive.write_bytes(build_archive())
    dest = tmp_path / "raw"
    data_dir = download.download_kuairec(
        dest, [closed_port_url()], archive=archive, check_rows=False, progress=False
    )
    assert (data_dir / "big_matrix.csv").read_text() == tiny_csv(kuairec.OFFICIAL_FILES["big_matrix.csv"])


def test_second_download_into_the_same_folder_waits(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from sasrec import locks

    archive = tmp_path / "elsewhere.zip"
    archive.write_bytes(build_archive())
    dest = tmp_path / "raw"
    holding, release = threading.Event(), threading.Event()

    def first_download() -> None:  # another download in progress (a thread stands for the process)
        with locks.locked(dest / download.ARCHIVE_NAME, what="KuaiRec archive"):
            holding.set()
            release.wait(30)

    first = threading.Thread(target=first_download)
    first.start()
    assert holding.wait(30)
    threading.Timer(0.3, release.set).start()
    with caplog.at_level(logging.WARNING, logger="sasrec"):
        data_dir = download.download_kuairec(dest, [closed_port_url()], archive=archive, check_rows=False)
    first.join(30)
    assert (data_dir / "small_matrix.csv").is_file()
    assert [r.getMessage().split(" (held by")[0] for r in caplog.records] == [
        f"waiting for KuaiRec archive {dest / download.ARCHIVE_NAME}"
    ]
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="KuaiRec download folder: .*a_file is a file, not a folder"):
        download.download_kuairec(blocker, [closed_port_url()], archive=archive)


def test_unsafe_member_rejected(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(build_archive({"../evil.csv": "x"}))
    with pytest.raises(DataValidationError, match="outside"):
        download.extract_archive(archive, tmp_path / "raw")
    assert not (tmp_path / "evil.csv").exists()


def test_drive_confirmation_page_parsed() -> None:
    html = (
        '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
        '<input type="hidden" name="id" value="ABC"><input type="hidden" name="export" value="download">'
        '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1"></form>'
    )
    assert (
        download._drive_confirm_url(html, download.GDRIVE_URL)
        == "https://drive.usercontent.google.com/download?id=ABC&export=download&confirm=t&uuid=u-1"
    )
    legacy = '<a href="/uc?export=download&amp;confirm=Xy_9&amp;id=ABC">Download anyway</a>'
    assert download._drive_confirm_url(legacy, download.GDRIVE_URL) == f"{download.GDRIVE_URL}&confirm=Xy_9"


def test_cli_parser_defaults_and_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    from sasrec.cli import download as download_cli

    download_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    defaults = parser.parse_args(["download"])
    assert defaults.url is None and defaults.timeout == 30.0 and not defaults.skip_row_check
    archive = tmp_path / "KuaiRec.zip"
    archive.write_bytes(build_archive())
    args = parser.parse_args(
        [
            "download",
            "--dest",
            str(tmp_path / "raw"),
            "--archive",
            str(archive),
            "--skip-row-check",
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    assert "files ready" in capsys.readouterr().out
    args = parser.parse_args(["download", "--url", "http://a", "--url", "http://b"])
    assert args.url == ["http://a", "http://b"]
