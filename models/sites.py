"""Site names (TransformerLens conventions, without the ``hook_`` prefix)."""

SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_post")
RESIDUAL_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")  # [d_model]
NEURON_SITE = "mlp_post"  # [d_mlp]: the coefficient m_i of each value vector
LENS_SITES = ("resid_pre", "resid_mid", "resid_post")  # residual-stream states the lens reads
