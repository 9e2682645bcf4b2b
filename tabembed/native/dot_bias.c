/* The dot-bias model's training step for one batch, forward and backward, on CPU.
 *
 * terms[b] = user[u] . item[i] + user_bias[u] + item_bias[i] + offset, optionally
 * low + (high - low) * sigmoid(terms[b]); and the sum over the batch of the squared
 * factors and biases (the embedding penalty, before its mean).
 *
 * In PyTorch these are two dozen small operations a step, each costing more than its
 * arithmetic (a batch is ~40k multiply-adds); here they are two loops. Loaded with
 * ctypes by tabembed/native/dot_bias.py; tabembed/models/dot_bias_terms.py keeps the
 * PyTorch path for everything else (GPU, sparse gradients, no C compiler).
 */
#include <stdint.h>
#include <string.h>
#include <math.h>

/* Returns 0, or 1 + the first row of the batch whose user or item code is out of range
   (nothing is read out of bounds; the caller raises). */
int64_t dot_bias_forward(int64_t n, int64_t d, const int64_t *users, const int64_t *items,
                         int64_t n_users, int64_t n_items, const float *user_table,
                         const float *item_table, const float *user_bias, const float *item_bias,
                         float offset, int32_t has_range, float low, float high,
                         float *terms, float *fraction, double *squares)
{
    double total = 0.0;
    for (int64_t b = 0; b < n; b++) {
        const int64_t u = users[b], i = items[b];
        if (u < 0 || u >= n_users || i < 0 || i >= n_items) return b + 1;
        const float *x = user_table + u * d, *y = item_table + i * d;
        float dot = 0.0f, square = 0.0f;
#pragma omp simd reduction(+:dot, square)
        for (int64_t k = 0; k < d; k++) {
            dot += x[k] * y[k];
            square += x[k] * x[k] + y[k] * y[k];
        }
        float t = dot + user_bias[u] + item_bias[i] + offset;
        total += (double)square + (double)user_bias[u] * user_bias[u]
                 + (double)item_bias[i] * item_bias[i];
        if (has_range) {
            const float f = 1.0f / (1.0f + expf(-t));
            fraction[b] = f;
            t = low + (high - low) * f;
        }
        terms[b] = t;
    }
    *squares = total;
    return 0;
}

/* Gradients of sum(grad[b] * terms[b]) + penalty_grad * squares, written into zeroed
   full-size tables (NULL: not needed); shrink = 2 * penalty_grad / n. With fraction
   (the forward's sigmoid, has_range), grad is first taken through low + scale * f.
   The padding row's gradients are zero, as nn.Embedding's padding_idx row's. */
void dot_bias_backward(int64_t n, int64_t d, const int64_t *users, const int64_t *items,
                       int64_t n_users, int64_t n_items, const float *user_table,
                       const float *item_table, const float *user_bias, const float *item_bias,
                       const float *grad, const float *fraction, float scale, float shrink,
                       int64_t padding, float *user_grad, float *item_grad,
                       float *user_bias_grad, float *item_bias_grad, double *offset_grad)
{
    if (user_grad) memset(user_grad, 0, sizeof(float) * (size_t)(n_users * d));
    if (item_grad) memset(item_grad, 0, sizeof(float) * (size_t)(n_items * d));
    if (user_bias_grad) memset(user_bias_grad, 0, sizeof(float) * (size_t)n_users);
    if (item_bias_grad) memset(item_bias_grad, 0, sizeof(float) * (size_t)n_items);
    double total = 0.0;
    for (int64_t b = 0; b < n; b++) {
        const int64_t u = users[b], i = items[b];
        float g = grad[b];
        if (fraction) g = g * fraction[b] * (1.0f - fraction[b]) * scale;
        total += g;
        const float *x = user_table + u * d, *y = item_table + i * d;
        if (user_grad) {
            float *gx = user_grad + u * d;
#pragma omp simd
            for (int64_t k = 0; k < d; k++) gx[k] += g * y[k] + shrink * x[k];
        }
        if (item_grad) {
            float *gy = item_grad + i * d;
#pragma omp simd
            for (int64_t k = 0; k < d; k++) gy[k] += g * x[k] + shrink * y[k];
        }
        if (user_bias_grad) user_bias_grad[u] += g + shrink * user_bias[u];
        if (item_bias_grad) item_bias_grad[i] += g + shrink * item_bias[i];
    }
    if (padding >= 0) {
        if (user_grad && padding < n_users) memset(user_grad + padding * d, 0, sizeof(float) * (size_t)d);
        if (item_grad && padding < n_items) memset(item_grad + padding * d, 0, sizeof(float) * (size_t)d);
        if (user_bias_grad && padding < n_users) user_bias_grad[padding] = 0.0f;
        if (item_bias_grad && padding < n_items) item_bias_grad[padding] = 0.0f;
    }
    *offset_grad = total;
}
