"""benchmarks/read_speed.py: its tables, from rows as measure_cube makes them."""

from __future__ import annotations

from benchmarks import read_speed


def _row(packed: bool) -> dict[str, object]:
    row: dict[str, object] = {
        "class": "S2 series",
        "cube": "cube",
        "n_chunks": 4,
        "chunks": [32, 4, 64, 64],
        "bpppb": 0.5,
        "psnr": 45.0,
        "mb": 100.0,
        "zstd_s": 0.1,
        "codec_s": 0.4,
        "serial_codec_s": 0.8,
        "video_decoder_share": 0.9,
        "read_s": 0.5,
        "open_read_s": 0.55,
        "before_open_read_s": None,
        "patterns": [],
    }
    if packed:
        row.update(packed_read_s=0.25, packed_open_read_s=1.1)
    return row


def test_the_packed_section_compares_with_the_folder_store() -> None:
    text = read_speed.tables([_row(packed=True)])
    assert "## Packed stores" in text
    # 100 MB in 0.5 s (folder) and 0.25 s (packed): 200 against 400 MB/s, 2.00x
    assert "| cube | 200 | 400 | 2.00 | 182 | 91 | 0.50 |" in text
    assert "## Packed stores" not in read_speed.tables([_row(packed=False)])
