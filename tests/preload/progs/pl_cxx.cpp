// pl_cxx.cpp: std::thread, std::mutex, std::condition_variable and
// std::this_thread::sleep_for, as an ordinary C++ program uses them (g++
// -pthread, no Caprice header).  Producers hand numbered items through a
// bounded deque; prints "cxx items N sum S" and exits 0 when the sum is
// the one expected.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

int main()
{
	constexpr int producers = 4, consumers = 4, items = 20000, cap = 8;
	std::mutex m;
	std::condition_variable not_full, not_empty;
	std::deque<long> q;
	int done_producers = 0;
	long total = 0, count = 0;

	std::vector<std::thread> threads;
	for (int p = 0; p < producers; p++)
		threads.emplace_back([&, p] {
			for (int i = 0; i < items; i++) {
				if (i % 2000 == 0)
					std::this_thread::sleep_for(std::chrono::milliseconds(1));
				std::unique_lock<std::mutex> lk(m);
				not_full.wait(lk, [&] { return q.size() < (size_t)cap; });
				q.push_back((long)p * items + i);
				not_empty.notify_one();
			}
			std::lock_guard<std::mutex> lk(m);
			if (++done_producers == producers)
				not_empty.notify_all();
		});
	for (int c = 0; c < consumers; c++)
		threads.emplace_back([&] {
			long sum = 0, n = 0;
			for (;;) {
				std::unique_lock<std::mutex> lk(m);
				not_empty.wait(lk, [&] { return !q.empty() || done_producers == producers; });
				if (q.empty())
					break;
				sum += q.front();
				q.pop_front();
				not_full.notify_one();
				lk.unlock();
				n++;
			}
			std::lock_guard<std::mutex> lk(m);
			total += sum;
			count += n;
		});
	auto t0 = std::chrono::steady_clock::now();
	std::this_thread::sleep_for(std::chrono::milliseconds(30));
	auto slept = std::chrono::steady_clock::now() - t0;
	for (auto &t : threads)
		t.join();
	long n = (long)producers * items;
	long want = n * (n - 1) / 2;
	long slept_ms = (long)std::chrono::duration_cast<std::chrono::milliseconds>(slept).count();
	std::printf("cxx items %ld sum %ld want %ld slept_ms %ld\n", count, total, want, slept_ms);
	return count == n && total == want && slept_ms >= 30 ? 0 : 1;
}
