import pytest
import torch
from diffusers import UNet2DConditionModel

# Two tiny SD1.x-shaped UNets: 2 levels with attention at the top, 3 levels with attention below.
UNET_CONFIGS = {
    "2level": dict(block_out_channels=(32, 64), layers_per_block=1,
                   down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8),
    "3level": dict(block_out_channels=(32, 32, 64), layers_per_block=2,
                   down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=4),
}


def make_unet(name: str, seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, cross_attention_dim=32,
                                norm_num_groups=8, **UNET_CONFIGS[name]).eval()


@pytest.fixture(params=list(UNET_CONFIGS))
def unet_name(request):
    return request.param


@pytest.fixture
def unet(unet_name):
    return make_unet(unet_name)


def inputs(batch=2, latent=8, factor=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(sample=torch.randn(batch, 4, latent, latent, generator=g),
                timestep=torch.tensor([10, 500][:batch]),
                encoder_hidden_states=torch.randn(batch, 7, 32, generator=g),
                controlnet_cond=torch.rand(batch, 3, latent * factor, latent * factor, generator=g))


def pytest_configure(config):
    config.addinivalue_line("markers", "after_notebooks: runs after every notebook (nbmake) item")


def _chapter_seconds():
    """Each TinySD chapter's seconds in the last suite_time benchmark (to start the longest first), and the
    lookup that finds a renumbered chapter by its name: scripts/execute_chapters.py's, which make book uses."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from execute_chapters import expected_seconds, seconds_of

    return expected_seconds(), seconds_of


def pytest_collection_modifyitems(session, config, items):
    """The order of the suite. `make test` runs two workers (pytest-xdist, --dist loadfile: a file's tests
    stay together and in order on one worker, so the stand-in chapters run 6 before 7 and 9): the TinySD
    chapters go first, longest first, then the stand-in chapters, then the other tests, and last the book
    test that builds from the chapters' outputs (under xdist it also waits for the other worker's
    chapters, tests/test_book_build.py)."""
    seconds, seconds_of = _chapter_seconds()

    def rank(item):
        if item.get_closest_marker("after_notebooks"):
            return (3, 0)
        if item.path.suffix == ".ipynb":
            return (0, -seconds_of(item.path.stem, seconds))
        if "test_standin_chapters" in item.nodeid:
            return (1, 0)
        return (2, 0)

    items.sort(key=rank)
