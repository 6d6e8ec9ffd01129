"""The connector contract's check: hypothesis generates outputs of every shape, and exactly the declared one passes;
a refusal is one line naming the connector, the declared shape and the emitted one (the command line's side:
tests/cli/test_plugin_contract.py)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignbench.model.vlm import ConnectorContractError, check_output


class _Fake:
    """A connector as `check_output` sees it: a name and a declared token count."""

    def __init__(self, declared):
        self.name, self.declared = "fake", declared

    def num_tokens(self, n):
        return self.declared(n)


@settings(max_examples=200, deadline=None)
@given(
    batch=st.integers(1, 3),
    patches=st.integers(1, 40),
    width=st.integers(1, 16),
    declared_extra=st.integers(-3, 3),
    emitted_extra=st.integers(-3, 3),
    width_extra=st.integers(-2, 2),
    ndim=st.sampled_from([2, 3, 4]),
)
def test_check_output_accepts_exactly_the_declared_shape(
    batch, patches, width, declared_extra, emitted_extra, width_extra, ndim
):
    declared = max(0, patches + declared_extra)
    emitted = max(0, patches + emitted_extra)
    out_width = max(1, width + width_extra)
    shape = {2: (batch, emitted), 3: (batch, emitted, out_width), 4: (batch, emitted, out_width, 1)}[ndim]
    tokens = torch.zeros(shape)
    features = torch.zeros(batch, patches, 5)
    fits = ndim == 3 and emitted == declared and out_width == width
    if fits:
        check_output(_Fake(lambda n: declared), features, tokens, width)
    else:
        with pytest.raises(ConnectorContractError) as info:
            check_output(_Fake(lambda n: declared), features, tokens, width)
        message = str(info.value)
        assert "\n" not in message and "'fake'" in message and f"[{batch}, {declared}, {width}]" in message
        assert f"shape {list(shape)}" in message


def test_a_non_tensor_output_is_named():
    with pytest.raises(ConnectorContractError, match="emitted a tuple"):
        check_output(_Fake(lambda n: n), torch.zeros(1, 4, 2), (torch.zeros(1, 4, 3),), 3)
