// Dirty-row sync of the GPU mirror: one launch writes the changed rows of every table.
//
// The host packs one buffer per sync (rtindex/core/gpu/mirror.py, DeviceMirror.sync):
//   jobs  int64[n_jobs, 4]: destination pointer, row bytes, row count, byte offset of
//         the job's data in the buffer (int32 row indices, then the rows, each part
//         16-byte aligned)
//   data  the indices and rows of each job
// and uploads it with one host-to-device copy; blockIdx.y picks the job, the x blocks
// stride over (row, word) pairs. Rows whose size is a multiple of 4 bytes are copied
// in 32-bit words, others (node_state: 1 byte) byte by byte.

extern "C" __global__ void scatter_rows(const unsigned char* __restrict__ packed, int n_jobs) {
    const int job = blockIdx.y;
    if (job >= n_jobs) return;
    const long long* desc = (const long long*)packed + 4LL * job;
    unsigned char* dst = (unsigned char*)desc[0];
    const long long row_bytes = desc[1];
    const long long n_rows = desc[2];
    const long long offset = desc[3];
    const int* rows = (const int*)(packed + offset);
    const long long index_bytes = ((n_rows * 4 + 15) / 16) * 16;
    const unsigned char* src = packed + offset + index_bytes;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long start = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if ((row_bytes & 3) == 0) {
        const long long words = row_bytes >> 2;
        const long long total = n_rows * words;
        unsigned int* dst_words = (unsigned int*)dst;
        const unsigned int* src_words = (const unsigned int*)src;
        for (long long t = start; t < total; t += stride) {
            const long long r = t / words;
            const long long c = t - r * words;
            dst_words[(long long)rows[r] * words + c] = src_words[t];
        }
    } else {
        const long long total = n_rows * row_bytes;
        for (long long t = start; t < total; t += stride) {
            const long long r = t / row_bytes;
            const long long c = t - r * row_bytes;
            dst[(long long)rows[r] * row_bytes + c] = src[t];
        }
    }
}
