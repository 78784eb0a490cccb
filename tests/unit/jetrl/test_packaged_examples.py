"""The demo's run spec ships inside the package (jetrl/examples), so `jetrl demo` and `jetrl bench`
work from an install without the repository; and the CLI reaches the benchmarks only lazily, with
no import circle between them."""

import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

from jetrl.cli.main import _parser
from jetrl.config import load_spec, parse_spec
from jetrl.examples import DEMO_SPEC

ROOT = Path(__file__).resolve().parents[3]


def test_demo_spec_loads_through_importlib_resources():
    text = resources.files("jetrl.examples").joinpath("arithmetic.yaml").read_text()
    spec = parse_spec(text)
    assert spec.task.name == "arithmetic" and spec == load_spec(DEMO_SPEC)
    assert DEMO_SPEC.parent == Path(resources.files("jetrl.examples"))  # a plain file of the package
    assert _parser().parse_args(["demo"]).spec == DEMO_SPEC  # `jetrl demo`'s default


def test_one_copy_shipped_as_package_data():
    # the repository's examples/arithmetic.yaml is a link to the package's copy, not a second one
    link = ROOT / "examples" / "arithmetic.yaml"
    assert link.is_symlink() and link.resolve() == DEMO_SPEC.resolve()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "examples/*.yaml" in package_data["jetrl"]


def test_bench_is_lazy_and_imports_no_cli_main():
    # the `jetrl` command imports no benchmark (nor matplotlib) until asked, and the benchmarks
    # never import jetrl.cli.main (the old circle: DEFAULT_SPEC)
    code = """if True:
        import sys
        import jetrl.cli.main
        assert not [m for m in sys.modules if m.startswith("jetrl.bench")], "jetrl.cli.main imports jetrl.bench"
        jetrl.cli.main._parser().parse_args(["bench", "async"])
        assert "matplotlib" not in sys.modules, "building the parser imports matplotlib"
        del sys.modules["jetrl.cli.main"]
        import jetrl.bench.real, jetrl.bench.rewards, jetrl.bench.sim, jetrl.bench.stack
        assert "jetrl.cli.main" not in sys.modules, "a benchmark imports jetrl.cli.main"
    """
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
