// pl_tls.cpp: thread-local storage as an ordinary C++ program relies on it
// (g++ -pthread, no Caprice header).  1,000 threads each keep a __thread
// value, a thread_local object whose destructor runs at thread exit, and
// errno, across 50 parks (sleeps, condvar waits and poll timeouts, which may
// resume on another worker); prints "tls ok N dtors D bad B" and exits 0
// when every value survived and every destructor ran once.  Each thread
// also formats a double and maps a letter's case, which read the C
// library's own per-thread ctype tables (set up as a thread starts).
#include <atomic>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <poll.h>
#include <thread>
#include <unistd.h>
#include <vector>

static std::atomic<int> dtors{0}, bad{0}, ok{0};
static __thread long mine;

struct Session {
	long id = -1;
	~Session() { dtors++; }
};
static thread_local Session session;

int main()
{
	constexpr int threads = 1000, rounds = 50;
	std::mutex m;
	std::condition_variable cv;
	long tick = 0;
	std::thread ticker([&] {
		for (int i = 0; i < rounds * 20; i++) {
			std::this_thread::sleep_for(std::chrono::microseconds(200));
			{
				std::lock_guard<std::mutex> lk(m);
				tick++;
			}
			cv.notify_all();
		}
	});
	std::vector<std::thread> ts;
	for (int t = 0; t < threads; t++)
		ts.emplace_back([&, t] {
			session.id = t;
			char text[32];
			std::snprintf(text, sizeof text, "%.1f%c", t + 0.5, std::toupper('q'));
			char want[32];
			std::snprintf(want, sizeof want, "%d.5Q", t);
			if (std::string(text) != want || !std::isalpha('q'))
				bad++;
			for (int r = 0; r < rounds; r++) {
				mine = t * 1000L + r;
				errno = 1000 + t;
				switch (r % 3) {
				case 0:
					std::this_thread::sleep_for(std::chrono::microseconds(100));
					break;
				case 1: {
					std::unique_lock<std::mutex> lk(m);
					long seen = tick;
					cv.wait_for(lk, std::chrono::milliseconds(20), [&] { return tick != seen; });
					break;
				}
				default:
					poll(nullptr, 0, 1);
					break;
				}
				if (mine != t * 1000L + r || session.id != t)
					bad++;
				if (r % 3 == 0 && errno != 1000 + t) /* a sleep that succeeded leaves errno */
					bad++;
			}
			ok++;
		});
	for (auto &t : ts)
		t.join();
	ticker.join();
	std::printf("tls ok %d dtors %d bad %d\n", ok.load(), dtors.load(), bad.load());
	return ok == threads && dtors == threads && bad == 0 ? 0 : 1;
}
