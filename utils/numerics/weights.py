"""Proximity weights w_j = j^-alpha (SPEC section 3) and the coefficients derived from them."""

import numpy as np


def rank_weights(n, alpha):
    """w_r = r ** -alpha for r = 1..n, float64."""
    return np.power(np.arange(1, n + 1, dtype=np.float64), -float(alpha))


def normalised_weight_matrix(n, alphas):
    """Columns w(alpha) / sum w(alpha): a dot with a sorted row gives P_i(alpha). Shape (n, A)."""
    weights = np.stack([rank_weights(n, a) for a in alphas], axis=1)
    return weights / weights.sum(axis=0)


def tail_coefficients(weights):
    """c_r = w_r - w_{r+1}: how much each value behind an insertion loses by moving a rank."""
    return weights[:-1] - weights[1:]
