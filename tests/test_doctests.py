"""The `>>>` examples in the docstrings of the library's modules, run with the standard library's doctest.

One test per module of `MODULES` (append to it to cover another module). A module fails when one of
its examples fails, and when it has no example at all.
"""

import doctest
import importlib

import pytest

MODULES = ["unroll.ops", "unroll.fastmath", "unroll.shrinkage", "unroll.steps", "unroll.kernels", "unroll.metrics",
           "unroll.multiscale", "unroll.nonblind", "unroll.inference.model", "unroll.classical.layout",
           "unroll.classical.check", "unroll.classical.l0", "unroll.classical.warm", "unroll.wavelets",
           "unroll.models.mgstnet", "unroll.models.priors", "unroll.models.registry", "unroll.atomic",
           "unroll.datasets", "unroll.noise", "unroll.data.degradation", "unroll"]

OPTIONS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name)
    assert sum(len(test.examples) for test in tests) > 0, f"{name} has no docstring examples"
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report = []
    for test in sorted(tests, key=lambda test: test.name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed:\n" + "".join(report)
