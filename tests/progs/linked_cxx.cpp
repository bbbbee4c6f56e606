// linked_cxx.cpp: C++ exceptions thrown across the chunks of a linked
// stack (linked.c calls this from a thread on one).  Built, like linked.c,
// with -fsplit-stack.
#include <stdexcept>

namespace {

long destroyed;

struct Counted {
	~Counted() { destroyed++; }
};

long down(long n)
{
	Counted c;
	volatile char pad[1000];
	pad[0] = 0;
	if (n == 0)
		throw std::runtime_error("the bottom");
	return down(n - 1) + pad[0];
}

} // namespace

// Throws from `depth` frames of about 1 KiB down and catches at the top;
// returns how many destructors the unwinding ran (depth + 1), or -1.
extern "C" long linked_cxx_throw_from(long depth)
{
	destroyed = 0;
	try {
		return down(depth) * 0 - 1;
	} catch (const std::runtime_error &) {
		return destroyed;
	}
}
