"""The adversarial suite (`mlgym audit`, env_server/audit/) as tests: every attack on both
backends, each a test of its own, against one real broker + environment server per backend
with canaries on the host. Each numbered finding of the trust-boundary issue is an attack
here; an attack that crashes or hangs fails."""

from __future__ import annotations

import shutil

import pytest
import pytest_asyncio

from conftest import require
from mlgym.env_server.audit import ATTACKS, Harness, run_one

pytestmark = pytest.mark.timeout(600)
BACKENDS = ("local", "docker")


def _available(backend: str) -> None:
    if backend == "local":
        require(shutil.which("bwrap") is not None, "bubblewrap (bwrap) is not installed")
        return
    from mlgym.env_server import image as img

    require(img.engine_reachable(), "docker engine not reachable (start dockerd)")
    if not img.image_present(img.MINIMAL_TAG):
        img.build_image(img.MINIMAL_TAG, minimal=True, online=False)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def harness(request):
    _available(request.param)
    image = "mlgym/task:minimal" if request.param == "docker" else ""
    async with Harness(request.param, ["battleOfSexes"], image=image) as h:
        yield h


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
async def test_attack_is_held_off(harness, attack):
    if harness.backend not in attack.backends:
        pytest.skip(f"{attack.name} does not apply to the {harness.backend} backend")
    outcome = await run_one(harness, attack)
    assert outcome.passed, f"#{attack.finding} {attack.name}: {outcome.observed}"


def test_every_attack_names_a_finding_and_an_expectation():
    assert len(ATTACKS) >= 20
    for a in ATTACKS:
        assert a.finding and a.expected and a.backends
    assert len({a.name for a in ATTACKS}) == len(ATTACKS)
