// The fast test bench: rtl/bench.py's cocotb bench, cycle for cycle, in C++ (see rtl/harness.py).
//
// One process holds one instance of the Verilated NPU (the same Vtop objects the cocotb build made) and runs
// the cases it reads from stdin, writing each result to stdout, until it reads the quit op or end of file.
// Everything rtl/bench.py does per cycle is done here at the same clock edge and with the same values:
//
//   * the clock: a cycle is the rising edge, then the falling edge; the bench drives inputs and samples
//     outputs at falling edges (cocotb applies a write after the falling edge's callbacks, before the
//     rising edge; so does tick());
//   * reset: rst high for two falling edges (start, ld_we, the queue handshakes low);
//   * loads: one word per cycle through ld_sel/ld_addr/ld_data/ld_we;
//   * the input queue: preloaded while it is ready, then (streaming cases) offered a word at every falling
//     edge where it is ready; the output queue drained at every falling edge while the program runs
//     (streaming) or after it (ready low during the run otherwise);
//   * the commit trace: (pc, cycles) of every commit port high at a falling edge after start;
//   * reads: one word per cycle through ld_sel/ld_addr, ld_rdata sampled at the next falling edge.
//
// The message format (little-endian uint32 words) is written out in rtl/harness.py.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "Vtop.h"
#include "Vtop___024root.h"
#include "verilated.h"
// HARNESS_MEMORIES(X): X(id, member) per memory of rtl/layout.py's MemoryMap whose array the model holds
// under its own name (written per build by rtl/harness.py); read back by peeking at it.
#include "harness_mems.h"

// vpi_* symbols of the cocotb build's objects want these; this process never loads a VPI library.
double sc_time_stamp() { return 0; }

namespace {

using u32 = uint32_t;
using u64 = uint64_t;

template <typename T>
constexpr int words_of() {
    if constexpr (VlIsVlWide<T>::value) {
        return T::Words;
    } else {
        return sizeof(T) > 4 ? 2 : 1;
    }
}

template <typename T>
void put(T& port, const u32* w) {
    if constexpr (VlIsVlWide<T>::value) {
        for (int k = 0; k < T::Words; ++k) port[k] = w[k];
    } else if constexpr (sizeof(T) > 4) {
        port = static_cast<T>(static_cast<u64>(w[0]) | (static_cast<u64>(w[1]) << 32));
    } else {
        port = static_cast<T>(w[0]);
    }
}

template <typename T>
void get(const T& port, u32* w) {
    if constexpr (VlIsVlWide<T>::value) {
        for (int k = 0; k < T::Words; ++k) w[k] = port[k];
    } else if constexpr (sizeof(T) > 4) {
        w[0] = static_cast<u32>(static_cast<u64>(port));
        w[1] = static_cast<u32>(static_cast<u64>(port) >> 32);
    } else {
        w[0] = static_cast<u32>(port);
    }
}

using LdData = std::remove_reference_t<decltype(std::declval<Vtop>().ld_data)>;
using LdRdata = std::remove_reference_t<decltype(std::declval<Vtop>().ld_rdata)>;
using InPayload = std::remove_reference_t<decltype(std::declval<Vtop>().inq___05Fpayload)>;
using OutPayload = std::remove_reference_t<decltype(std::declval<Vtop>().outq___05Fpayload)>;
constexpr int WL = words_of<LdData>();
constexpr int WR = words_of<LdRdata>();
constexpr int WI = words_of<InPayload>();
constexpr int WO = words_of<OutPayload>();

struct Reader {
    std::vector<u32> buf;
    size_t pos = 0;
    u32 next() { return buf.at(pos++); }
    const u32* take(size_t n) {
        if (pos + n > buf.size()) throw std::out_of_range("message too short");
        const u32* p = buf.data() + pos;
        pos += n;
        return p;
    }
};

bool read_exactly(void* p, size_t n) { return fread(p, 1, n, stdin) == n; }

// The pipelined machine's second commit port (transfers), when the design has one.
template <typename T>
auto watch_dma(T* top, std::vector<u32>& commits) -> decltype(top->dma_commit, void()) {
    if (top->dma_commit) {
        commits.push_back(top->dma_commit_pc);
        commits.push_back(top->cycles);
    }
}
inline void watch_dma(...) {}

// The MVM bypass's commit port (MVM-only chains completing beside the others), when the design has one.
template <typename T>
auto watch_byp(T* top, std::vector<u32>& commits) -> decltype(top->byp_commit, void()) {
    if (top->byp_commit) {
        commits.push_back(top->byp_commit_pc);
        commits.push_back(top->cycles);
    }
}
inline void watch_byp(...) {}

template <typename T>
constexpr auto has_dma_commit(T* top) -> decltype(top->dma_commit, true) { return true; }
constexpr bool has_dma_commit(...) { return false; }

class Bench {
  public:
    Bench() : ctx(new VerilatedContext), top(new Vtop{ctx.get(), "npu_top"}) {
        top->clk = 1;  // cocotb's Clock starts high
        top->eval();
        reset();
    }
    ~Bench() { top->final(); }

    // One "await FallingEdge(dut.clk)": what was written since the last edge settles, the rising edge,
    // the falling edge.
    void tick() {
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
    }

    void reset() {
        top->rst = 1;
        top->start = 0;
        top->ld_we = 0;
        top->inq___05Fvalid = 0;
        top->outq___05Fready = 0;
        tick();
        tick();
        top->rst = 0;
    }

    // Word ``addr`` of memory ``mem`` straight from the model's array (zero-extended to ld_rdata's width, as
    // the read port gives it); false for a memory the model does not hold under its own name.
    bool peek(u32 mem, u32 addr, u32* w) {
        std::fill(w, w + WR, 0u);
        auto* root = top->rootp;
        (void)root;
        (void)addr;
        switch (mem) {
#define HARNESS_PEEK(id, member)                                              \
    case id:                                                                  \
        if (addr >= root->member.size()) throw std::out_of_range("read beyond a memory"); \
        get(root->member[addr], w);                                           \
        return true;
            HARNESS_MEMORIES(HARNESS_PEEK)
#undef HARNESS_PEEK
            default:
                return false;
        }
    }

    // What the commit watcher of rtl/bench.py logs at this falling edge.
    void watch(std::vector<u32>& commits) {
        if (top->commit) {
            commits.push_back(top->commit_pc);
            commits.push_back(top->cycles);
        }
        watch_dma(top.get(), commits);
        watch_byp(top.get(), commits);
    }

    void run_case(Reader& in, std::vector<u32>& out) {
        auto t0 = std::chrono::steady_clock::now();
        const u32 flags = in.next();
        const bool do_reset = flags & 1, has_program = flags & 2, stream = flags & 4, has_limit = flags & 8;
        const bool direct = flags & 16;  // read back by peeking at the memories, not through the read port
        const u64 limit = static_cast<u64>(in.next()) | (static_cast<u64>(in.next()) << 32);
        const u32 prog_len = in.next();
        if (do_reset) reset();
        // loads
        const u32 n_loads = in.next();
        for (u32 l = 0; l < n_loads; ++l) {
            const u32 mem = in.next(), addr = in.next(), n = in.next();
            const u32* words = in.take(static_cast<size_t>(n) * WL);
            top->ld_sel = mem;
            for (u32 k = 0; k < n; ++k) {
                top->ld_addr = addr + k;
                put(top->ld_data, words + static_cast<size_t>(k) * WL);
                top->ld_we = 1;
                tick();
            }
        }
        top->ld_we = 0;
        const u32 n_inputs = in.next();
        const u32* inputs = in.take(static_cast<size_t>(n_inputs) * WI);
        const u32 n_reads = in.next();
        const u32* reads = in.take(static_cast<size_t>(n_reads) * 3);

        u32 cycles = 0, error = 0, hung = 0;
        std::vector<u32> commits, outputs;
        u64 sim_ns = 0;
        auto drain = [&]() {
            outputs.resize(outputs.size() + WO);
            get(top->outq___05Fpayload, outputs.data() + outputs.size() - WO);
        };
        if (has_program) {
            u32 fed = 0;
            auto feed = [&]() {  // rtl/bench.py's _Feeder.step
                if (fed < n_inputs && top->inq___05Fready) {
                    put(top->inq___05Fpayload, inputs + static_cast<size_t>(fed) * WI);
                    top->inq___05Fvalid = 1;
                    ++fed;
                } else {
                    top->inq___05Fvalid = 0;
                }
            };
            while (fed < n_inputs && top->inq___05Fready) {  // preload what fits
                feed();
                tick();
            }
            top->inq___05Fvalid = 0;
            top->prog_len = prog_len;
            top->start = 1;
            tick();
            watch(commits);
            top->start = 0;
            auto t1 = std::chrono::steady_clock::now();
            if (stream) {
                top->outq___05Fready = 1;
                u64 n = 0;
                while (true) {
                    tick();
                    watch(commits);
                    ++n;
                    feed();
                    if (!top->busy) break;
                    if (has_limit && n >= limit) {
                        hung = 1;
                        break;
                    }
                    if (top->outq___05Fvalid) drain();
                }
            } else {
                if (top->busy) {
                    // First(FallingEdge(busy), ClockCycles(clk, limit)), then the next falling edge
                    u64 k = 0;
                    top->eval();
                    while (true) {
                        top->clk = 1;
                        top->eval();
                        ++k;
                        if (!top->busy) break;
                        if (has_limit && k >= limit) {
                            hung = 1;
                            break;
                        }
                        top->clk = 0;
                        top->eval();
                        watch(commits);
                    }
                    top->clk = 0;
                    top->eval();
                    watch(commits);
                } else {
                    tick();
                    watch(commits);
                }
            }
            sim_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t1)
                         .count();
            top->inq___05Fvalid = 0;
            cycles = top->cycles;
            error = top->error;
            top->outq___05Fready = 1;  // drain the output queue
            while (top->outq___05Fvalid) {
                drain();
                tick();
            }
            top->outq___05Fready = 0;
        }
        // reads
        size_t total = 0;
        for (u32 r = 0; r < n_reads; ++r) total += reads[3 * r + 2];
        std::vector<u32> got(total * WR);
        size_t at = 0;
        for (u32 r = 0; r < n_reads; ++r) {
            top->ld_sel = reads[3 * r];
            const u32 addr = reads[3 * r + 1], count = reads[3 * r + 2];
            if (direct && count && peek(reads[3 * r], addr + count - 1, got.data() + at)) {
                for (u32 k = 0; k < count; ++k) {
                    peek(reads[3 * r], addr + k, got.data() + at);
                    at += WR;
                }
                continue;
            }
            for (u32 k = 0; k < count; ++k) {
                top->ld_addr = addr + k;
                tick();
                get(top->ld_rdata, got.data() + at);
                at += WR;
            }
        }
        const u64 wall_ns =
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
        out = {0, cycles, error, hung, static_cast<u32>(commits.size() / 2)};
        out.insert(out.end(), commits.begin(), commits.end());
        out.push_back(static_cast<u32>(outputs.size() / WO));
        out.insert(out.end(), outputs.begin(), outputs.end());
        out.push_back(static_cast<u32>(total));
        out.insert(out.end(), got.begin(), got.end());
        for (u64 v : {sim_ns, wall_ns}) {
            out.push_back(static_cast<u32>(v));
            out.push_back(static_cast<u32>(v >> 32));
        }
    }

  private:
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<Vtop> top;
};

void write_message(const std::vector<u32>& words) {
    const u64 bytes = words.size() * 4;
    fwrite(&bytes, 8, 1, stdout);
    fwrite(words.data(), 4, words.size(), stdout);
    fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    // the greeting: magic, protocol version, the words of ld_data, ld_rdata, the input and output payloads,
    // and whether the design has the pipelined machine's DMA commit port
    write_message({0x4855504eu, 1, WL, WR, WI, WO, has_dma_commit(static_cast<Vtop*>(nullptr))});
    Bench bench;
    Reader in;
    std::vector<u32> out;
    while (true) {
        u64 bytes = 0;
        if (!read_exactly(&bytes, 8) || bytes % 4) return 0;
        in.buf.resize(bytes / 4);
        in.pos = 0;
        if (!read_exactly(in.buf.data(), bytes)) return 1;
        const u32 op = in.buf.empty() ? 0 : in.next();
        if (op == 0) return 0;
        if (op == 2) {  // reset the registers only
            bench.reset();
            write_message({0});
            continue;
        }
        try {
            bench.run_case(in, out);
        } catch (const std::exception& exc) {
            const size_t n = strlen(exc.what());
            std::vector<u32> err = {1, static_cast<u32>(n)};
            std::vector<u32> text((n + 3) / 4, 0);
            memcpy(text.data(), exc.what(), n);
            err.insert(err.end(), text.begin(), text.end());
            write_message(err);
            continue;
        }
        write_message(out);
    }
}
