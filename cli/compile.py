"""``npu compile``, ``npu run``, ``npu check`` and ``npu zoo``."""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from cli import progress
from compiler.driver import PASS_NAMES
from npu.errors import NpuError

COMPILE_EPILOG = """\
examples:
  npu compile resnet50.onnx --config brainslice-128 -o resnet50.npu
  npu compile model.onnx --config small --format msfp12 -o model.npu --json
  npu compile bert.onnx --input-shape input_ids=1,128 --no-host-fallback -o bert.npu
  npu compile tiny.onnx --config tiny --dump-after partition --dump-after fuse_epilogues
  npu compile lstm2.onnx --config brainslice-128 --devices 2 -o lstm2.npu     # two NPUs, every weight pinned
  npu compile resnet50.onnx --devices auto -o r50.npu   # the fewest NPUs that pin every weight
  npu compile resnet50.onnx --fabric brainslice-128x4    # a named fabric: configuration x NPUs

several NPUs (--devices, docs/multinpu.md): the layers are cut into pipeline stages, one per NPU, each
within one MRF and balanced by modeled cycles; a layer larger than one MRF is split by rows (output
channels) and joined on the NPU that reads it. Links default to Catapult v2's (40 Gb/s, 1.5 us a hop).

passes, in order (--dump-after PASS prints the IR after it; --dump-after all after each):
{passes}
"""

RUN_EPILOG = """\
examples:
  npu run resnet50.npu --input cat.jpg
  npu run mlp.npu --input x.npy --json
  npu run resnet50.npu --input x.npy --trace run.json   # open in https://ui.perfetto.dev
  npu run resnet50.npu --input x.npy --layers            # modeled cycles per layer
  npu run r50x18.npu --input x.npy --stream 64 --trace t.json   # several NPUs: 64 requests pipelined

A model compiled for several NPUs reports the latency of one request (stages in sequence, link hops
included), and with --stream K the throughput of K requests pipelined through the stages, each NPU's
utilization and each link's; its trace has one process per NPU and one for the links.

utilization = graph MACs / (cycles x the configuration's MACs per cycle), the same figure
`npu compile` reports; "tile utilization" counts the MACs the MVM performs on whole native
tiles instead (padding included).
"""

CHECK_EPILOG = """\
examples:
  npu check resnet50.onnx --config brainslice-128 --inputs 20
  npu check tiny_cnn.onnx --config tiny --format msfp12 --json
  npu check model.onnx --config small --per-layer --inputs 2
"""


class _Fmt(argparse.RawDescriptionHelpFormatter):
    pass


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("compile", help="compile an ONNX model to a .npu model file",
                              description="Compile an ONNX model for an NPU configuration: NPU chains for what "
                                          "maps, onnxruntime on the host for the rest, in one .npu file.",
                              epilog=COMPILE_EPILOG.format(passes=textwrap.fill(
                                  " -> ".join(PASS_NAMES), 100, initial_indent="  ", subsequent_indent="  ")),
                              formatter_class=_Fmt)
    p.add_argument("model", type=Path, help="ONNX model file")
    p.add_argument("--config", default="brainslice-128", help="preset name or .toml/.json (default brainslice-128)")
    p.add_argument("-o", "--output", type=Path, help="model file to write (default: MODEL with .npu)")
    p.add_argument("--format", dest="fmt", help="BFP format for weights and activations (e.g. msfp16, msfp12, ms-fp9)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D1,D2,...",
                   help="fix a dynamic input shape; repeatable")
    p.add_argument("--no-host-fallback", action="store_true", help="fail instead of running unsupported ops on the host")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--dump-after", action="append", default=[], metavar="PASS", choices=PASS_NAMES + ("all",),
                   help="print the IR after this pass (repeatable; 'all' for every pass; the list is below)")
    p.add_argument("--devices", default="1", metavar="N|auto",
                   help="NPUs to spread the model over as pipeline stages (default 1; 'auto': the fewest that pin "
                        "every weight)")
    p.add_argument("--fabric", metavar="NAME",
                   help="a named fabric, configuration x NPUs (e.g. brainslice-128x4); sets --config and --devices")
    p.add_argument("--hop-cycles", type=int, help="link latency of one hop in cycles (default: Catapult v2's 1.5 us)")
    p.add_argument("--link-bytes-per-cycle", type=int, help="link bandwidth (default: 40 Gb/s at the clock)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_compile)

    p = subparsers.add_parser("run", help="run a .npu model on the simulator (or RTL)",
                              description="Run one inference of a compiled model and print its outputs "
                                          "(top-5 for a classifier) with the modeled cycles and latency.",
                              epilog=RUN_EPILOG, formatter_class=_Fmt)
    p.add_argument("model", type=Path, help=".npu model file")
    p.add_argument("--input", action="append", default=[], metavar="[NAME=]FILE",
                   help=".npy array or an image (jpg/png) for an image model; repeatable for several inputs")
    p.add_argument("--json", action="store_true", help="print outputs and statistics as JSON")
    p.add_argument("--trace", type=Path, help="write a Chrome/Perfetto trace of the NPU segments")
    p.add_argument("--backend", default="sim", choices=("sim", "rtl"), help="machine to run on (default sim)")
    p.add_argument("--layers", action="store_true", help="print modeled cycles and utilization per layer")
    p.add_argument("--stream", type=int, default=0, metavar="K",
                   help="also time K requests pipelined through the model's NPUs (throughput, per-NPU and link "
                        "utilization; the trace shows all K)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("check", help="compare the compiled model on the simulator with onnxruntime",
                              description="Compile, run random (or given) inputs on the simulator and on "
                                          "onnxruntime, and report cosine similarity, errors and top-k agreement.",
                              epilog=CHECK_EPILOG, formatter_class=_Fmt)
    p.add_argument("model", type=Path, help="ONNX model file")
    p.add_argument("--config", default="brainslice-128")
    p.add_argument("--format", dest="fmt")
    p.add_argument("--inputs", type=int, default=20, help="number of random inputs (default 20)")
    p.add_argument("--input", action="append", default=[], metavar="[NAME=]FILE.npy",
                   help="use this input instead of random ones (a leading axis is iterated when it is extra)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D1,D2,...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-layer", action="store_true",
                   help="also compare every intermediate tensor (read from a second compilation that outputs them; "
                        "outputs and latency stay the plain model's)")
    p.add_argument("--json", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_check)


# ---------------------------------------------------------------------- compile
def _devices(args):
    """(config, devices, fabric or None) from --config, --devices, --fabric and the link options."""
    from npu.config import get_config
    from npu.fabric import default_fabric, parse_fabric

    config, devices = args.config, args.devices
    if args.fabric:
        config, devices = parse_fabric(args.fabric)
    if devices != "auto":
        try:
            devices = int(devices)
        except (TypeError, ValueError):
            raise NpuError(f"--devices must be a positive integer or 'auto', not {devices!r}") from None
        if devices < 1:
            raise NpuError(f"--devices must be a positive integer or 'auto', not {devices}")
    fabric = None
    if args.hop_cycles is not None or args.link_bytes_per_cycle is not None:
        fabric = default_fabric(get_config(config), 1)
        if args.hop_cycles is not None:
            fabric = fabric.replace(hop_cycles=args.hop_cycles)
        if args.link_bytes_per_cycle is not None:
            fabric = fabric.replace(link_bytes_per_cycle=args.link_bytes_per_cycle)
    return config, devices, fabric


def _compile_devices(args, out, config, devices, fabric, bar, dump):
    """compile_to_file on several NPUs (the driver directly: compiler.compile_to_file is the one-NPU path)."""
    from compiler import default_preprocessing, driver
    from compiler.report import CompileReport
    from npu.modelfile import write_model

    c = driver.compile_graph(args.model, config, args.fmt, args.input_shape, not args.no_host_fallback, bar,
                             dump_after=args.dump_after, dump=dump, devices=devices, fabric=fabric)
    manifest, members = driver.package(c, default_preprocessing(args.model, c))
    write_model(out, manifest, members)
    report = CompileReport.from_dict(manifest["compiler"]["report"])
    report.compile_time_s = round(c.timings.get("total_s", 0.0), 3)
    return report


def cmd_compile(args) -> int:
    from compiler import compile_to_file

    out = args.output or args.model.with_suffix(".npu")
    config, devices, fabric = _devices(args)
    bar = progress.counter(args, "compiling")
    # with --json the IR goes to stderr, so stdout stays one JSON document
    dump = (lambda text: print(text, file=sys.stderr)) if args.json else print
    try:
        if devices != 1 or fabric is not None:
            report = _compile_devices(args, out, config, devices, fabric, bar, dump)
        else:
            report = compile_to_file(args.model, out, config=config, fmt=args.fmt, input_shapes=args.input_shape,
                                     host_fallback=not args.no_host_fallback, progress=bar,
                                     dump_after=args.dump_after, dump=dump)
    finally:
        progress.close(bar)
    if args.json:
        print(json.dumps(dict(report.to_dict(), output=str(out)), indent=1))
    else:
        print(report.table())
        print(f"wrote {out}")
    return 0


# ---------------------------------------------------------------------- run
def _parse_inputs(items, specs) -> dict[str, object]:
    out = {}
    for k, item in enumerate(items):
        name, sep, path = item.partition("=")
        if not sep:
            if k >= len(specs):
                raise NpuError(f"--input {item}: the model has only {len(specs)} inputs")
            name, path = specs[k].name, item
        out[name] = Path(path)
    return out


def _load_input(path: Path, spec, manifest):
    import numpy as np

    if not path.exists():
        raise NpuError(f"--input {path}: no such file")
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix == ".npz":
        with np.load(path) as z:
            return z[spec.name] if spec.name in z else z[z.files[0]]
    from runtime.preprocess import ImageConfig, preprocess_image

    cfg = ImageConfig.from_manifest(manifest, spec)
    if cfg is None:
        raise NpuError(f"--input {path}: this model takes no images (its manifest has no image preprocessing); "
                       "give a .npy array")
    return preprocess_image(path.read_bytes(), cfg)[None].astype(spec.dtype)


def cmd_run(args) -> int:
    import numpy as np

    from npu.modelfile import read_model
    from runtime.executor import Executor

    if args.trace and args.backend != "sim":
        raise NpuError("--trace needs --backend sim (the RTL backend reports per-step commits, not unit timelines)")
    model = read_model(args.model)
    if args.backend == "rtl":
        from cli.rtl import prebuild

        prebuild(model.config, args)
    ex = Executor(model, backend=args.backend)
    specs = ex.inputs
    paths = _parse_inputs(args.input, specs)
    feeds = {}
    for spec in specs:
        if spec.name not in paths:
            raise NpuError(f"missing --input for {spec.name!r} ({spec.dtype} {list(spec.shape)})")
        feeds[spec.name] = _load_input(paths[spec.name], spec, model.manifest)
    if args.stream < 0 or args.stream > 100_000:
        raise NpuError(f"--stream must be between 1 and 100000 requests, not {args.stream}")
    trace = [] if (args.trace or args.layers) else None
    outputs, stats = ex.run(feeds, trace=trace)
    layers = ex.layers(trace or []) if args.layers else []
    sched = ex.stream(max(1, args.stream)) if (args.stream or (ex.fabric and args.trace)) else None
    if args.trace and ex.fabric is not None:
        from sim.trace import write_fabric_trace

        npu_steps = [k for k, s in enumerate(model.manifest["plan"]) if s["kind"] == "npu"]
        write_fabric_trace(sched, dict(zip(npu_steps, trace)), args.trace)
    elif args.trace and trace:
        from sim.trace import write_trace

        write_trace(trace[0], args.trace) if len(trace) == 1 else _write_traces(trace, args.trace)
    labels = (model.manifest.get("preprocessing") or {}).get("labels")
    result = {"outputs": {}, "stats": stats.to_dict()}
    if args.layers:
        result["layers"] = layers
    if sched is not None and args.stream:
        result["stream"] = sched.summary()
    for name, value in outputs.items():
        entry = {"shape": list(value.shape), "dtype": str(value.dtype)}
        if value.ndim == 2 and value.shape[0] == 1 and value.shape[1] > 1:
            from runtime.labels import top_k

            entry["top5"] = [{"index": i, "label": lab, "score": round(p, 6)}
                             for i, lab, p in top_k(value, 5, labels)]
        if value.size <= 64:
            entry["values"] = np.asarray(value, np.float64).ravel().round(6).tolist()
        result["outputs"][name] = entry
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for name, entry in result["outputs"].items():
        print(f"{name}: {entry['dtype']} {entry['shape']}")
        for t in entry.get("top5", []):
            print(f"  {t['index']:>5}  {t['score']:.4f}  {t['label']}")
        if "top5" not in entry and "values" in entry:
            print("  " + " ".join(f"{v:.5g}" for v in entry["values"]))
    if layers:
        print(f"{'layer':<44} {'cycles':>10} {'MACs':>14} {'util':>7} {'tile util':>9}")
        for x in layers:
            print(f"{x['layer'][:44]:<44} {x['cycles']:>10,} {x['macs']:>14,} {x['utilization']:>7.1%} "
                  f"{x['tile_utilization']:>9.1%}")
    print(f"NPU: {stats.npu_cycles:,} cycles, {stats.latency_us:,.1f} us modeled at "
          f"{ex.config.clock_mhz:g} MHz, utilization {stats.utilization:.1%} of {stats.macs:,} graph MACs "
          f"(tile utilization {stats.tile_utilization:.1%} with padding); "
          f"host {stats.host_time_s * 1e3:.1f} ms; wall {stats.wall_time_s:.2f} s ({args.backend})")
    if ex.fabric is not None:
        f = ex.fabric
        print(f"  on {f.devices} NPUs: one request {stats.latency_us:,.1f} us (stages in sequence, "
              f"{f.hop_cycles}-cycle link hops at {f.link_bytes_per_cycle} B/cycle included); utilization is of all {f.devices} NPUs")
    if sched is not None and args.stream:
        _print_stream(sched)
    return 0


def _print_stream(sched) -> None:
    s = sched.summary()
    print(f"stream of {s['requests']} requests: {s['throughput_per_s']:,.1f} requests/s over "
          f"{s['makespan_cycles']:,} cycles (steady state {s['steady_per_s']:,.1f}/s, one every "
          f"{s['interval_cycles']:,} cycles)")
    print(f"  {'npu':>4} {'busy cycles':>14} {'busy':>6} {'util':>6} {'link busy':>8}")
    for d in range(s["devices"]):
        print(f"  {d:>4} {s['device_busy'][d]:>14,} {s['device_busy_share'][d]:>6.1%} "
              f"{s['device_utilization'][d]:>6.1%} {s['link_utilization'][d]:>8.1%}")


def _write_traces(results, path: Path) -> None:
    from sim.trace import trace_events

    events = []
    for k, r in enumerate(results):
        for e in trace_events(r, process_name=f"npu segment {k}"):
            events.append(dict(e, pid=k + 1))
    path.write_text(json.dumps({"traceEvents": events}))


# ---------------------------------------------------------------------- check
def cmd_check(args) -> int:
    import numpy as np

    from compiler.check import check_model

    feeds = None
    if args.input:
        import onnx

        from compiler.frontend import load_model

        model = load_model(args.model, args.input_shape)
        inits = {i.name for i in model.graph.initializer}
        names = [i.name for i in model.graph.input if i.name not in inits]
        arrays = {}
        for k, item in enumerate(args.input):
            name, sep, path = item.partition("=")
            if not sep:
                name, path = names[k], item
            arrays[name] = np.load(path)
        ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in model.graph.input}
        count = max((len(a) if a.ndim > ranks[n] else 1) for n, a in arrays.items())
        feeds = [{n: (a[j] if a.ndim > ranks[n] else a) for n, a in arrays.items()} for j in range(count)]
        _ = onnx
    bar = progress.counter(args, "simulating")
    try:
        res = check_model(args.model, args.config, args.fmt, args.inputs, args.seed, feeds, args.per_layer,
                          args.input_shape, progress=bar)
    finally:
        progress.close(bar)
    if args.json:  # strict JSON: a non-finite figure is null and named under "nonfinite"
        print(res.to_json(indent=1))
        return 0 if res.ok else 1
    print(f"{args.model} on {res.config} ({res.format}), {res.inputs} inputs, simulator vs onnxruntime:")
    for t in res.outputs:
        top = f", top-1 agreement {t.top1_agreement:.1%}, top-5 {t.top5_agreement:.1%}" \
            if t.top1_agreement is not None else ""
        diff = f", input-sensitive cosine {t.diff_cosine_min:.6f}" if t.diff_cosine_min is not None else ""
        print(f"  output {t.name}: cosine min {t.cosine_min:.6f}{diff}, max abs err {t.max_abs_err:.4g}, "
              f"max rel err {t.max_rel_err:.4g}{top}")
        if t.nonfinite_mismatches:
            print(f"    {t.nonfinite_mismatches} NaN/inf elements where onnxruntime's differ: FAILED")
            if t.beyond_fp16:
                print(f"    onnxruntime's values reach {t.reference_max_abs:.3g}, beyond fp16's range: the NPU's "
                      "vector unit overflows (weights or scales that make activations this large; trained "
                      "networks rarely do)")
    if args.per_layer:
        print(f"  {'tensor':<48} {'cosine':>9} {'max abs':>10} {'max rel':>9}")
        for t in res.layers:
            print(f"  {t.name[:48]:<48} {t.cosine_min:>9.6f} {t.max_abs_err:>10.4g} {t.max_rel_err:>9.4g}")
    print(f"  modeled NPU latency {res.latency_us:,.1f} us ({res.npu_cycles:,} cycles)"
          + (" of the model as compiled, without the per-layer outputs" if args.per_layer else ""))
    if res.diff_cosine_min is None and res.inputs < 2:
        print("  (one input: the input-sensitive cosine, out(x1) - out(x2) against onnxruntime, needs two)")
    return 0 if res.ok else 1
