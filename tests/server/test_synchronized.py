"""The synchronized texture job's maths (synchronized.py) in plain torch: the fusion of views in the
latent texture and the render back, the starting noise, and the step from ε to x0 and back for
every scheduler the server offers."""
import diffusers
import pytest
import torch
from diffusers.models.attention_processor import Attention

from sd_blender_server.schedulers import SCHEDULERS
from sd_blender_server.synchronized import (
    NeighbourAttention,
    TexelMap,
    fill_empty_texels,
    fuse,
    initial_noise,
    noise_scales,
    render,
    synchronize,
)


def texel_map(*views: list[tuple[float, float, float]], size: int) -> TexelMap:
    """Views of one row each: a (u, v, c) per latent pixel."""
    return TexelMap.from_correspondence(torch.tensor([[view] for view in views]), size)


def test_views_are_fused_with_cosine_weights_and_rendered_back():
    # A 2x2 texture: texel (row 0, column 0) is centred at u = 0.25, v = 0.75, (0, 1) at u = 0.75, v = 0.75.
    # View A: a pixel on texel (0, 0) with c = 1, one halfway to (0, 1) with c = 0.5.
    # View B: a pixel on texel (0, 0) with c = 0.5, one that sees nothing.
    mapping = texel_map([(0.25, 0.75, 1.0), (0.5, 0.75, 0.5)], [(0.25, 0.75, 0.5), (0.0, 0.0, 0.0)], size=2)
    latents = torch.tensor([[[[1.0, 5.0]]], [[[3.0, 7.0]]]])  # (views, channels, h, w)
    # Weights c^2: 1 for A's first pixel, 0.25 split 0.125 / 0.125 for its second, 0.25 for B's first.
    texel_0 = (1 * 1 + 5 * 0.125 + 3 * 0.25) / (1 + 0.125 + 0.25)  # 19 / 11
    texture = fuse(latents, mapping, exponent=2)
    # The bottom row got nothing: each texel there takes the value of the filled texel above it.
    expected = torch.tensor([[[texel_0, 5.0], [texel_0, 5.0]]])
    torch.testing.assert_close(texture, expected)
    rendered = render(texture, mapping, latents)
    torch.testing.assert_close(rendered, torch.tensor([[[[texel_0, (texel_0 + 5) / 2]]], [[[texel_0, 7.0]]]]))
    torch.testing.assert_close(synchronize(latents, mapping, exponent=2), rendered)


def test_empty_texels_take_the_value_of_their_nearest_filled_texel():
    generator = torch.Generator().manual_seed(3)
    for _ in range(10):
        filled = torch.rand(37, 29, generator=generator) < 0.03
        texture = torch.randn(2, 37, 29, generator=generator)
        result = fill_empty_texels(texture, filled)
        rows, columns = torch.nonzero(filled, as_tuple=True)
        all_rows, all_columns = torch.meshgrid(torch.arange(37), torch.arange(29), indexing="ij")
        distances = (all_rows[..., None] - rows) ** 2 + (all_columns[..., None] - columns) ** 2
        nearest = distances == distances.min(-1, keepdim=True).values  # (37, 29, filled texels)
        # One of the filled texels at the least distance (several may be as near) gave the value.
        same_value = (result[:, :, :, None] == texture[:, rows, columns][:, None, None]).all(0)
        assert (same_value & nearest).any(-1).all()


def test_the_texture_size_clamps_samples_to_the_border_texels():
    mapping = texel_map([(0.0, 1.0, 1.0), (1.0, 0.0, 1.0)], size=4)  # the top left and bottom right corners
    heaviest = mapping.bilinear.max(0)
    assert heaviest.values.tolist() == [1.0, 1.0]
    assert mapping.texels.gather(0, heaviest.indices[None]).tolist() == [[0, 15]]


def test_starting_noise_is_unit_gaussian_and_agrees_where_views_see_the_same_texels():
    generator = torch.Generator().manual_seed(0)
    uv = torch.rand(64, 64, 2, generator=generator)
    seen = torch.cat([uv, torch.ones(64, 64, 1)], -1)
    unseen_half = seen.clone()
    unseen_half[:, 32:, 2] = 0
    mapping = TexelMap.from_correspondence(torch.stack([seen, seen, unseen_half]), 64)
    noise = initial_noise(mapping, (3, 4, 64, 64), generator)
    assert abs(noise.mean()) < 0.03
    assert abs(noise.std() - 1) < 0.03
    torch.testing.assert_close(noise[0], noise[1])
    torch.testing.assert_close(noise[2, :, :, :32], noise[0, :, :, :32])
    assert (noise[2, :, :, 32:] - noise[0, :, :, 32:]).abs().mean() > 0.5


@pytest.mark.parametrize("name", sorted(set(SCHEDULERS) - {"euler_a", "lcm"}))  # they add fresh noise each step
def test_each_scheduler_keeps_to_the_line_an_exact_denoiser_draws(name):
    """With an exact denoiser (its ε read from a known x0 by each sample's (α, s)) a deterministic
    sampler moves along x = α·x0 + s·ε with one ε: a wrong (α, s) for the scheduler leaves it. TCD
    runs deterministic here (gamma 0)."""
    chosen = SCHEDULERS[name]
    scheduler = getattr(diffusers, chosen.diffusers_class)(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", **chosen.options
    )
    scheduler.set_timesteps(20)
    scales = noise_scales(scheduler)
    clean = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    signal, spread = scales(0, scheduler.timesteps[0])
    sample = signal * clean + spread * noise
    for index, timestep in enumerate(scheduler.timesteps):
        scheduler.scale_model_input(sample, timestep)
        signal, spread = scales(index, timestep)
        predicted = (sample - signal * clean) / spread
        torch.testing.assert_close(predicted, noise, atol=1e-3, rtol=1e-3)
        sample = scheduler.step(predicted, timestep, sample, **({"eta": 0.0} if name == "tcd" else {})).prev_sample


def test_neighbour_attention_reads_the_neighbours_tokens_as_keys_and_values():
    torch.manual_seed(0)
    attention = Attention(query_dim=8, heads=2, dim_head=4)
    views = torch.randn(3, 5, 8)  # (views, tokens, channels)
    plain = attention(views)
    alone = NeighbourAttention(torch.tensor([[0], [1], [2]]), torch.ones(3, 1, dtype=torch.bool))
    attention.set_processor(alone)
    torch.testing.assert_close(attention(views), plain)
    # View 0 reads view 2 too; views 1 and 2 have no neighbour (their second source is padding).
    attention.set_processor(NeighbourAttention(torch.tensor([[0, 2], [1, 1], [2, 2]]), torch.tensor([[1, 1], [1, 0], [1, 0]]).bool()))
    read = attention(views)
    attention.set_processor(diffusers.models.attention_processor.AttnProcessor2_0())
    torch.testing.assert_close(read[0], attention(views[:1], torch.cat([views[0], views[2]])[None])[0])
    torch.testing.assert_close(read[1:], plain[1:])
