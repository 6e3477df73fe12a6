/* test_vulkan.c — the Vulkan device layer on every device the loader reports (lavapipe in CI), under
 * the validation layer: any validation error fails the test.
 *
 * Each kernel is held against a scalar reference on random inputs of awkward sizes:
 *  - matmul (matrix–vector for n <= 4, tiled matrix–matrix above) for F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K and
 *    Q6_K weights
 *    against the weights dequantised by the CPU's type traits (kernels/types.c) and dotted in double;
 *    the device sums in f32 in another order, so |y − ref| <= 1e-5 · Σ|w·x| + 1e-6;
 *  - RMSNorm (with and without the residual add), RoPE (pairs and NEOX halves), residual add, bias
 *    add and SwiGLU against the CPU forward pass's formulas.
 * A deliberate invalid call first shows that the validation messenger reports errors at all.
 * Misuse (wrong block multiple, unknown type, short buffers, recording outside begin/submit, a buffer
 * past maxStorageBufferRange, a device index past the list) must return the documented status.
 *
 * A build without Vulkan has nothing to run: exit 77 (skipped). A build with Vulkan where no device or
 * no validation layer can be found fails: CI installs lavapipe and the layers (scripts/install-deps.sh). */
#include <dlfcn.h>
#include <math.h>
#include <string.h>

#include "backend/vulkan/vk_impl.h"
#include "kernels/types.h"
#include "testutil.h"
#include "util/rng.h"

static int n_validation_errors;

static void on_message(void *ud, bool is_error, const char *msg) {
    (void)ud;
    fprintf(stderr, "vulkan validation %s: %s\n", is_error ? "ERROR" : "warning", msg);
    if (is_error) n_validation_errors++;
}

static void fill(es_rng *r, float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(es_rng_uniform(r) * 2.0 - 1.0) * scale;
}

/* A device buffer holding `bytes` of src. */
static es_vk_buf *upload(es_vk *vk, const void *src, size_t bytes) {
    es_err err = {0};
    es_vk_buf *b = NULL;
    CHECK_OK(es_vk_buf_alloc(vk, bytes, &b, &err), &err);
    if (b) CHECK_OK(es_vk_buf_write(vk, b, 0, src, bytes, &err), &err);
    return b;
}

static bool download(es_vk *vk, const es_vk_buf *b, void *dst, size_t bytes) {
    es_err err = {0};
    es_status st = es_vk_buf_read(vk, b, 0, dst, bytes, &err);
    CHECK_OK(st, &err);
    return st == ES_OK;
}

/* ---- matmul ----------------------------------------------------------------------------------- */

static void test_matmul(es_vk *vk, es_rng *rng, uint32_t type, int64_t rows, int64_t cols, int64_t n) {
    const es_type_traits *tr = es_type_get(type);
    const size_t row_bytes = es_row_size(type, cols);
    float *wf = malloc((size_t)(rows * cols) * sizeof(float)), *wd = malloc((size_t)cols * sizeof(float));
    float *x = malloc((size_t)(n * cols) * sizeof(float)), *y = malloc((size_t)(n * rows) * sizeof(float));
    uint8_t *wq = malloc(rows * row_bytes);
    double *ref = malloc((size_t)(n * rows) * sizeof(double)), *mag = malloc((size_t)(n * rows) * sizeof(double));
    fill(rng, wf, rows * cols, 1.0f);
    fill(rng, x, n * cols, 1.0f);
    for (int64_t r = 0; r < rows; r++) tr->from_float(wf + r * cols, wq + r * row_bytes, cols);
    for (int64_t r = 0; r < rows; r++) { /* the reference sees the weights as the CPU dequantises them */
        tr->to_float(wq + r * row_bytes, wd, cols);
        for (int64_t a = 0; a < n; a++) {
            double s = 0, m = 0;
            for (int64_t j = 0; j < cols; j++) {
                s += (double)wd[j] * x[a * cols + j];
                m += fabs((double)wd[j] * x[a * cols + j]);
            }
            ref[a * rows + r] = s;
            mag[a * rows + r] = m;
        }
    }
    es_vk_buf *bw = upload(vk, wq, rows * row_bytes), *bx = upload(vk, x, (size_t)(n * cols) * sizeof(float)), *by = NULL;
    es_err err = {0};
    CHECK_OK(es_vk_buf_alloc(vk, (size_t)(n * rows) * sizeof(float), &by, &err), &err);
    if (bw && bx && by) {
        CHECK_OK(es_vk_begin(vk, &err), &err);
        CHECK_OK(es_vk_matmul(vk, by, bw, 0, type, rows, cols, bx, n, &err), &err);
        CHECK_OK(es_vk_submit(vk, &err), &err);
        if (download(vk, by, y, (size_t)(n * rows) * sizeof(float))) {
            int bad = 0;
            double worst = 0;
            for (int64_t i = 0; i < n * rows; i++) {
                const double e = fabs(y[i] - ref[i]), tol = 1e-5 * mag[i] + 1e-6;
                if (!(e <= tol)) bad++;
                if (e / (mag[i] + 1e-30) > worst) worst = e / (mag[i] + 1e-30);
            }
            CHECK_MSG(bad == 0, "matmul %s %lld x %lld, %lld rows: %d outputs off (worst relative error %.2g)",
                      tr->name, (long long)rows, (long long)cols, (long long)n, bad, worst);
        }
    }
    es_vk_buf_free(vk, bw);
    es_vk_buf_free(vk, bx);
    es_vk_buf_free(vk, by);
    free(wf); free(wd); free(x); free(y); free(wq); free(ref); free(mag);
}

static void test_matmuls(es_vk *vk, es_rng *rng) {
    /* rows × cols × activation rows: one row, odd counts, partial 32-row tiles in both directions, the
     * switch between the matrix–vector (n <= 4) and the tiled kernel (n >= 5) */
    static const int64_t shapes[][3] = {{1, 32, 1},  {37, 96, 1},   {70, 160, 3},  {33, 64, 4},   {33, 64, 5},
                                        {65, 288, 37}, {130, 32, 33}, {31, 256, 64}, {100, 128, 100}};
    static const uint32_t types[] = {ES_TYPE_F32, ES_TYPE_F16, ES_TYPE_BF16, ES_TYPE_Q8_0, ES_TYPE_Q4_0};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        CHECK(es_vk_matmul_supports(types[t]));
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            test_matmul(vk, rng, types[t], shapes[s][0], shapes[s][1], shapes[s][2]);
    }
    /* plain types take any column count (pieces of 16 with a ragged end) */
    test_matmul(vk, rng, ES_TYPE_F32, 23, 45, 1);
    test_matmul(vk, rng, ES_TYPE_F32, 41, 77, 9);
    test_matmul(vk, rng, ES_TYPE_F16, 19, 13, 2);
    test_matmul(vk, rng, ES_TYPE_F16, 45, 99, 40);
    test_matmul(vk, rng, ES_TYPE_BF16, 19, 13, 2);
    test_matmul(vk, rng, ES_TYPE_BF16, 45, 99, 40);
    /* K-quants: super-blocks of 256 */
    static const int64_t kshapes[][3] = {{1, 256, 1}, {37, 512, 1}, {33, 256, 4}, {70, 768, 5}, {65, 256, 37}};
    static const uint32_t ktypes[] = {ES_TYPE_Q4_K, ES_TYPE_Q5_K, ES_TYPE_Q6_K};
    for (int t = 0; t < 3; t++) {
        const uint32_t kt = ktypes[t];
        CHECK(es_vk_matmul_supports(kt));
        for (size_t s = 0; s < sizeof kshapes / sizeof kshapes[0]; s++) test_matmul(vk, rng, kt, kshapes[s][0], kshapes[s][1], kshapes[s][2]);
    }
    /* a vocabulary-sized output: more weight rows than one grid dimension holds (65535) */
    test_matmul(vk, rng, ES_TYPE_Q8_0, 70001, 32, 1);
}

/* ---- norms, RoPE, elementwise ----------------------------------------------------------------- */

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        const double e = fabs((double)a[i] - b[i]);
        if (!(e <= m)) m = e; /* NaN propagates */
    }
    return m;
}

static void test_rmsnorm(es_vk *vk, es_rng *rng, int64_t n, int64_t d, bool residual) {
    const float eps = 1e-5f;
    float *x = malloc((size_t)(n * d) * 4), *r = malloc((size_t)(n * d) * 4), *w = malloc((size_t)d * 4);
    float *ref = malloc((size_t)(n * d) * 4), *xs = malloc((size_t)(n * d) * 4), *y = malloc((size_t)(n * d) * 4),
          *xo = malloc((size_t)(n * d) * 4);
    fill(rng, x, n * d, 2.0f);
    fill(rng, r, n * d, 1.0f);
    fill(rng, w, d, 1.5f);
    for (int64_t i = 0; i < n; i++) {
        double ss = 0;
        for (int64_t j = 0; j < d; j++) {
            xs[i * d + j] = residual ? x[i * d + j] + r[i * d + j] : x[i * d + j];
            ss += (double)xs[i * d + j] * xs[i * d + j];
        }
        const double sc = 1.0 / sqrt(ss / (double)d + eps);
        for (int64_t j = 0; j < d; j++) ref[i * d + j] = (float)(w[j] * (sc * xs[i * d + j]));
    }
    es_vk_buf *bx = upload(vk, x, (size_t)(n * d) * 4), *br = upload(vk, r, (size_t)(n * d) * 4), *bw = upload(vk, w, (size_t)d * 4);
    es_vk_buf *by = NULL;
    es_err err = {0};
    CHECK_OK(es_vk_buf_alloc(vk, (size_t)(n * d) * 4, &by, &err), &err);
    if (bx && br && bw && by) {
        CHECK_OK(es_vk_begin(vk, &err), &err);
        CHECK_OK(es_vk_rmsnorm(vk, by, bx, residual ? br : NULL, bw, n, d, eps, &err), &err);
        CHECK_OK(es_vk_submit(vk, &err), &err);
        if (download(vk, by, y, (size_t)(n * d) * 4) && download(vk, bx, xo, (size_t)(n * d) * 4)) {
            const double e = max_abs_diff(y, ref, n * d);
            CHECK_MSG(e <= 2e-5, "rmsnorm %lld x %lld%s: max error %.3g", (long long)n, (long long)d,
                      residual ? " + residual" : "", e);
            CHECK_MSG(max_abs_diff(xo, xs, n * d) == 0, "rmsnorm: the residual stream must hold x (+ r) exactly");
        }
    }
    es_vk_buf_free(vk, bx); es_vk_buf_free(vk, br); es_vk_buf_free(vk, bw); es_vk_buf_free(vk, by);
    free(x); free(r); free(w); free(ref); free(xs); free(y); free(xo);
}

static void test_rope(es_vk *vk, es_rng *rng, int64_t n, int n_heads, int head_dim, int rope_dim, bool neox, int64_t stride) {
    const int half = rope_dim / 2;
    const size_t nv = (size_t)((n - 1) * stride + (int64_t)n_heads * head_dim);
    float *v = malloc(nv * 4), *ref = malloc(nv * 4), *out = malloc(nv * 4);
    float *cs = malloc((size_t)n * half * 4), *sn = malloc((size_t)n * half * 4);
    fill(rng, v, (int64_t)nv, 1.0f);
    memcpy(ref, v, nv * 4);
    for (int64_t i = 0; i < n; i++) /* angles as the CPU computes them: pos · base^(-2j/rope_dim) */
        for (int j = 0; j < half; j++) {
            const float a = (float)(i * 7 + 3) * (1.0f / powf(10000.0f, (float)(2 * j) / (float)rope_dim));
            cs[i * half + j] = cosf(a);
            sn[i * half + j] = sinf(a);
        }
    for (int64_t i = 0; i < n; i++)
        for (int h = 0; h < n_heads; h++) {
            float *p = ref + i * stride + (int64_t)h * head_dim;
            for (int j = 0; j < half; j++) {
                const int a = neox ? j : 2 * j, b = neox ? j + half : 2 * j + 1;
                const float v0 = p[a], v1 = p[b], c = cs[i * half + j], s = sn[i * half + j];
                p[a] = v0 * c - v1 * s;
                p[b] = v0 * s + v1 * c;
            }
        }
    es_vk_buf *bv = upload(vk, v, nv * 4), *bc = upload(vk, cs, (size_t)n * half * 4), *bs = upload(vk, sn, (size_t)n * half * 4);
    es_err err = {0};
    if (bv && bc && bs) {
        CHECK_OK(es_vk_begin(vk, &err), &err);
        CHECK_OK(es_vk_rope(vk, bv, bc, bs, n, n_heads, head_dim, rope_dim, neox, stride, &err), &err);
        CHECK_OK(es_vk_submit(vk, &err), &err);
        if (download(vk, bv, out, nv * 4)) {
            const double e = max_abs_diff(out, ref, (int64_t)nv);
            CHECK_MSG(e <= 1e-6, "rope %s %lld rows, %d heads of %d (rope %d): max error %.3g", neox ? "neox" : "pairs",
                      (long long)n, n_heads, head_dim, rope_dim, e);
        }
    }
    es_vk_buf_free(vk, bv); es_vk_buf_free(vk, bc); es_vk_buf_free(vk, bs);
    free(v); free(ref); free(out); free(cs); free(sn);
}

static void test_elementwise(es_vk *vk, es_rng *rng, int64_t n, int64_t width) {
    const int64_t count = n * width;
    float *a = malloc((size_t)count * 4), *b = malloc((size_t)count * 4), *bias = malloc((size_t)width * 4);
    float *ref = malloc((size_t)count * 4), *out = malloc((size_t)count * 4);
    fill(rng, a, count, 4.0f);
    fill(rng, b, count, 2.0f);
    fill(rng, bias, width, 1.0f);
    es_vk_buf *ba = upload(vk, a, (size_t)count * 4), *bb = upload(vk, b, (size_t)count * 4), *bbias = upload(vk, bias, (size_t)width * 4);
    es_err err = {0};
    for (int op = 0; op < 3 && ba && bb && bbias; op++) {
        for (int64_t i = 0; i < count; i++) {
            const float g = a[i];
            ref[i] = op == 0 ? a[i] + b[i] : op == 1 ? a[i] + bias[i % width] : g * (1.0f / (1.0f + expf(-g))) * b[i];
        }
        CHECK_OK(es_vk_buf_write(vk, ba, 0, a, (size_t)count * 4, &err), &err);
        CHECK_OK(es_vk_begin(vk, &err), &err);
        if (op == 0) CHECK_OK(es_vk_add(vk, ba, bb, count, &err), &err);
        if (op == 1) CHECK_OK(es_vk_bias(vk, ba, bbias, n, width, &err), &err);
        if (op == 2) CHECK_OK(es_vk_swiglu(vk, ba, bb, count, &err), &err);
        CHECK_OK(es_vk_submit(vk, &err), &err);
        if (download(vk, ba, out, (size_t)count * 4)) {
            /* add and bias are one f32 addition (exact match); the device's exp is within a few ulp */
            const double e = max_abs_diff(out, ref, count), tol = op == 2 ? 1e-5 : 0;
            CHECK_MSG(e <= tol, "elementwise op %d over %lld x %lld: max error %.3g", op, (long long)n, (long long)width, e);
        }
    }
    es_vk_buf_free(vk, ba); es_vk_buf_free(vk, bb); es_vk_buf_free(vk, bbias);
    free(a); free(b); free(bias); free(ref); free(out);
}

/* ---- misuse ----------------------------------------------------------------------------------- */

static void test_errors(es_vk *vk, const es_device_info *info) {
    es_err err = {0};
    es_vk_buf *b = NULL, *big = NULL;
    CHECK_OK(es_vk_buf_alloc(vk, 4096, &b, &err), &err);
    if (!b) return;
    /* kernels outside a recording, transfers inside one */
    CHECK(es_vk_add(vk, b, b, 16, &err) == ES_ERR_INVALID_ARG);
    CHECK_OK(es_vk_begin(vk, &err), &err);
    float f[4] = {0};
    CHECK(es_vk_buf_write(vk, b, 0, f, sizeof f, &err) == ES_ERR_INVALID_ARG);
    CHECK(es_vk_begin(vk, &err) == ES_ERR_INVALID_ARG);
    /* Q8_0 rows must be whole blocks; Q3_K has no kernel here; buffers too small for the shape */
    CHECK(es_vk_matmul(vk, b, b, 0, ES_TYPE_Q8_0, 2, 48, b, 1, &err) == ES_ERR_INVALID_ARG);
    CHECK(es_vk_matmul(vk, b, b, 0, ES_TYPE_Q3_K, 1, 256, b, 1, &err) == ES_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "q3_k") != NULL);
    CHECK(es_vk_matmul(vk, b, b, 0, ES_TYPE_F32, 64, 64, b, 1, &err) == ES_ERR_INVALID_ARG);
    CHECK(es_vk_add(vk, b, b, 2000, &err) == ES_ERR_INVALID_ARG);
    CHECK(es_vk_rope(vk, b, b, b, 1, 2, 8, 9, false, 16, &err) == ES_ERR_INVALID_ARG);
    CHECK_OK(es_vk_submit(vk, &err), &err); /* an empty recording is fine */
    CHECK(es_vk_submit(vk, &err) == ES_ERR_INVALID_ARG);
    CHECK(es_vk_buf_write(vk, b, 4000, f, sizeof f * 100, &err) == ES_ERR_INVALID_ARG);
    /* more than one binding may cover */
    if (info->max_storage_buffer_range < INT64_MAX / 2) {
        CHECK(es_vk_buf_alloc(vk, (size_t)info->max_storage_buffer_range + 4, &big, &err) == ES_ERR_RANGE);
        CHECK(big == NULL);
        CHECK(strstr(err.msg, "maxStorageBufferRange") != NULL);
    }
    es_vk_buf_free(vk, b);
}

/* The messenger is live: a buffer of size 0 is invalid usage the layer must report (called on the
 * device directly; the layer reports, the driver may still return a handle). */
static void test_messenger(es_vk *vk) {
    const int before = n_validation_errors;
    VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = 0,
                             .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VkBuffer buf = VK_NULL_HANDLE;
    fprintf(stderr, "(the next validation error is expected)\n");
    if (vkCreateBuffer(vk->dev, &bi, NULL, &buf) == VK_SUCCESS && buf != VK_NULL_HANDLE) vkDestroyBuffer(vk->dev, buf, NULL);
    CHECK_MSG(n_validation_errors > before, "the validation layer reported nothing for a buffer of size 0");
    n_validation_errors = before;
}

/* Writes and reads through the staging buffer (as on a discrete GPU without host-visible device
 * memory), including transfers larger than the 4 MiB staging buffer and at offsets. */
static void test_staging(int index) {
    es_vk_params p = {.device = index, .validation = true, .on_message = on_message, .force_staging = true};
    es_vk *vk = NULL;
    es_err err = {0};
    CHECK_OK(es_vk_init(&p, &vk, &err), &err);
    if (!vk) return;
    es_rng rng;
    es_rng_seed(&rng, 99);
    const size_t n = (size_t)3 << 20; /* 12 MiB of floats: three staging rounds */
    float *a = malloc(n * 4), *b = malloc(n * 4);
    fill(&rng, a, (int64_t)n, 1.0f);
    es_vk_buf *buf = NULL;
    CHECK_OK(es_vk_buf_alloc(vk, n * 4 + 6, &buf, &err), &err);
    if (buf && a && b) {
        CHECK_OK(es_vk_buf_write(vk, buf, 4, a, n * 4, &err), &err);
        memset(b, 0, n * 4);
        CHECK_OK(es_vk_buf_read(vk, buf, 4, b, n * 4, &err), &err);
        CHECK_MSG(memcmp(a, b, n * 4) == 0, "staged write + read of %zu bytes at offset 4 changed the data", n * 4);
    }
    es_vk_buf_free(vk, buf);
    free(a);
    free(b);
    test_matmul(vk, &rng, ES_TYPE_Q8_0, 37, 96, 1);
    test_matmul(vk, &rng, ES_TYPE_F16, 45, 99, 40);
    test_rmsnorm(vk, &rng, 5, 288, true);
    test_elementwise(vk, &rng, 9, 333);
    es_vk_free(vk);
}

static void test_device(int index) {
    es_vk_params p = {.device = index, .validation = true, .on_message = on_message};
    es_vk *vk = NULL;
    es_err err = {0};
    CHECK_OK(es_vk_init(&p, &vk, &err), &err);
    if (!vk) return;
    const es_device_info *info = es_vk_info(vk);
    fprintf(stderr, "device %d: %s (%s), %lld MiB, subgroup %u\n", index, info->name, info->type,
            (long long)(info->memory_bytes >> 20), info->subgroup_size);
    test_messenger(vk);
    es_rng rng;
    es_rng_seed(&rng, 1234 + (uint64_t)index);
    test_matmuls(vk, &rng);
    test_rmsnorm(vk, &rng, 1, 7, false);
    test_rmsnorm(vk, &rng, 5, 288, true);
    test_rmsnorm(vk, &rng, 3, 1000, false);
    test_rope(vk, &rng, 1, 6, 48, 48, false, 288);
    test_rope(vk, &rng, 7, 4, 64, 64, true, 256);
    test_rope(vk, &rng, 3, 2, 64, 32, true, 160); /* partial rotary dims, rows further apart than the heads */
    test_elementwise(vk, &rng, 1, 5);
    test_elementwise(vk, &rng, 9, 333);
    test_errors(vk, info);
    es_vk_free(vk);
}

int main(void) {
    /* Keep lavapipe loaded past vkDestroyInstance: LeakSanitizer symbolises its report after the
     * loader unloaded the driver and would report the driver's static allocations as a leak. */
    dlopen("libvulkan_lvp.so", RTLD_NOW | RTLD_NODELETE);
    if (!es_vk_available()) {
        fprintf(stderr, "test_vulkan: this build has no Vulkan backend (configured with ES_VULKAN=OFF or AUTO without "
                        "the loader): nothing to run\n");
        return 77;
    }
    es_device_info devs[8];
    int n = 0;
    es_err err = {0};
    es_status st = es_devices(devs, 8, &n, &err);
    CHECK_MSG(st == ES_OK, "es_devices: %s (is mesa-vulkan-drivers installed? scripts/install-deps.sh)", err.msg);
    CHECK_MSG(n >= 1, "the build has Vulkan but the loader reports no device; CI runs on lavapipe (mesa-vulkan-drivers)");
    for (int i = 0; i < n && i < 8; i++) {
        CHECK(!strcmp(devs[i].backend, "vulkan"));
        CHECK(devs[i].index == i);
        CHECK(devs[i].name[0] != 0);
        CHECK(devs[i].memory_bytes > 0);
        CHECK(devs[i].subgroup_size >= 1);
        CHECK(devs[i].max_storage_buffer_range >= 1 << 20);
        CHECK(devs[i].n_features >= 0 && devs[i].n_features <= ES_DEVICE_FEATURES_MAX);
    }
    /* a device index past the list */
    es_vk_params bad = {.device = n, .validation = true, .on_message = on_message};
    es_vk *vk = NULL;
    CHECK(es_vk_init(&bad, &vk, &err) == ES_ERR_RANGE);
    CHECK(vk == NULL);
    CHECK(strstr(err.msg, "no device") != NULL);
    for (int i = 0; i < n && i < 8; i++) {
        test_device(i);
        test_staging(i);
    }
    CHECK_MSG(n_validation_errors == 0, "%d validation errors", n_validation_errors);
    return es_test_finish("test_vulkan");
}
