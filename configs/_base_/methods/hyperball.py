# Method switch: Hyperball (Wen, Dang, Lyu, Ma & Liang 2026, arXiv 2606.16899): every
# weight matrix keeps its initial Frobenius norm R and every update has length
# eta * R, around the config's own optimizer (SGD, AdamW, ...):
#   W_{t+1} = R * Normalize(W_t - eta_t * R * Normalize(u_t)),  u_t = the optimizer's step.
# The matrices are conv/linear weights and attention projections, except the input
# embedding (the first layer the forward runs) and zero-initialised ones (R = 0).
# Their weight decay is taken over; embeddings, tokens, biases and norm gains keep the
# optimizer and the config's weight decay (uncontrolled_weight_decay='none': none
# anywhere, the paper's setting). lr=None: eta_t is the group's lr; apply_method /
# --method hyperball set lr = sqrt(lr * weight_decay) of the converted config, the
# authors' starting point, when it has weight decay (docs/methods.md).
custom_imports = dict(imports=['fixnorm_mm'], allow_failed_imports=False)
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='NormControlOptimWrapperConstructor',
    norm_control=dict(type='Hyperball', lr=None, include=[], exclude=[],
                      uncontrolled_weight_decay='keep'))
