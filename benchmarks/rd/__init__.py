"""Rate–distortion and speed of eocube against the reference approach and the competitors.

Run::

    .venv/bin/python -m benchmarks.rd --quick   # 3 small cubes, short sweeps (a few minutes)
    .venv/bin/python -m benchmarks.rd           # every cube of the corpus (~25 min, 2 cores)

The corpus is ``--corpus`` (or ``--data``), else ``$EOCUBE_CORPUS``, else ``tests/data``
(benchmarks.corpus). Cubes larger than ``--max-values`` values are cropped spatially (all
bands and dates kept; the window with the most valid values), and the crop is recorded.
Per cube, in one run:

- eocube: :func:`eocube.to_eocube` into ``memory://`` with each lossy profile (its own
  band layout) over a crf sweep, and the lossless profiles (``ffv1-lossless``; and
  ``hevc-lossless`` where the range fits 12 bits). Only the ``data`` variable and its
  coordinates are written (the cube's separate cloud ``mask`` layer is dropped, so every
  method compresses the same values). ``bpppb`` counts every byte of the store
  (metadata, coordinates, masks); ``bpppb_payload`` the chunk payloads only. Decoding is
  end to end: ``xr.open_dataset(store, engine="eocube")["data"].values``; the codec alone
  is the time spent inside the video decoder when the same chunk payloads are decoded
  one after another with one thread (``decode_chunk(on_codec_time=...)``);
- the reference approach (benchmarks.reference, a reimplementation of IPL-UV/xarrayvideo,
  arXiv 2506.19656): its bpppb counts video bytes only (padded bands included), its own
  basis;
- the competitors (benchmarks.competitors): SZ3, SPERR, ZFP, bit rounding + zstd,
  JPEG-XL, JPEG 2000, HTJ2K; lossless zstd, JPEG-XL, JPEG-LS.

PSNR, bpppb, compression ratio and max abs error are those of :mod:`eocube.metrics`
(docs/format.md: per-band data-range peak over valid values, mean over bands). Speeds are MB/s
of the original array in its dtype (median of the decode repeats; one encode).

Writes into ``benchmarks/results/rd`` (``--quick``: ``benchmarks/results/rd/quick``;
``--out``: elsewhere): ``results.jsonl`` (one record per point), ``<cube>.md`` and
``<cube>.png`` per cube, ``summary.md`` (the goals of issue 5, met or missed, and the
figures behind the defaults). Per-cube parts live in ``points/`` so that a run can be
resumed (``--resume``) or a cube rerun (``--cubes``), and ``--report-only`` rebuilds the
reports.

Modules, in the order a run uses them:

- :mod:`~benchmarks.rd.cli`: the command line, and the run over the cubes;
- :mod:`~benchmarks.rd.sweeps`: what is measured (quick cubes, crf sweeps, the default);
- :mod:`~benchmarks.rd.runner`: one cube's points, in a child process that may crash;
- :mod:`~benchmarks.rd.methods`: how one point of eocube, the reference or a competitor
  is measured;
- :mod:`~benchmarks.rd.parts`: the per-cube part files of ``points/`` (cache and resume);
- :mod:`~benchmarks.rd.records`: selecting records and reading curves from them;
- :mod:`~benchmarks.rd.cube_page`: each cube's table and plot;
- :mod:`~benchmarks.rd.goals`: the goals of the summary, met or missed;
- :mod:`~benchmarks.rd.summary`: ``summary.md``.
"""
