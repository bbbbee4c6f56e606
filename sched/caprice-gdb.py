# caprice-gdb.py: gdb commands that show Caprice's user threads.
#
# gdb sees the worker kernel threads; the user threads live in sched's
# data structures.  This script reads them:
#
#   caprice threads [-brief]     every live user thread: id, name, state,
#                                worker, and where it waits (the first frame
#                                outside the runtime)
#   caprice workers              the workers: kernel thread, what runs there
#   caprice bt THREAD [BT-ARGS]  a user thread's backtrace
#   caprice apply all CMD        runs a gdb command in each user thread's
#   caprice apply THREAD... -- CMD   context (or in some)
#
# THREAD is a Caprice thread id (1 = main), a name as pthread_setname_np
# set it, or a pthread_t value (0x...).
#
# A running thread is shown by its worker's kernel thread.  A switched-out
# thread's registers are the ones cp_ctx_switch (context.S) saved on its
# stack; to show it, the selected kernel thread's registers are set to
# them for the duration of the command and put back afterwards (also when
# the command fails).  That needs a live process: on a core file only the
# running threads can be shown.
#
# The build places a copy next to libthread.so and libthread-preload.so
# (and installs one under share/gdb/auto-load/), so gdb loads it with the
# library once the directory is trusted (add-auto-load-safe-path).

import os
import re

import gdb

# objfiles whose frames are "the runtime": a thread waiting in a call is
# shown by the outermost frame there and its caller outside.  The sanitizer
# runtimes sit between the program and libthread (their interceptors call
# the real pthread_cond_wait and friends), so they count too.
_RUNTIME_LIBS = ("libthread.so", "libthread-preload.so",
                 "libasan.so", "libubsan.so", "libtsan.so")
_MAX_THREADS = 1000000      # list walks stop here (a corrupt list loops)
_MAX_WHERE_FRAMES = 64


class CapriceError(gdb.GdbError):
    pass


# ------------------------------------------------------------------
# reading the scheduler's data


def _var(name):
    """A global variable of the runtime (hidden ones included), or None."""
    for lookup in (gdb.lookup_global_symbol, gdb.lookup_static_symbol):
        try:
            sym = lookup(name, gdb.SYMBOL_VAR_DOMAIN)
        except gdb.error:
            sym = None
        if sym is not None:
            return sym.value()
    return None


def _is_runtime_file(path):
    base = os.path.basename(path or "")
    return any(base.startswith(p) for p in _RUNTIME_LIBS)


def _workers():
    """The workers, as struct cp_worker values, in index order: the
    regular ones, then the spares (cp_nall counts both)."""
    arr = _var("cp_workers")
    n = _var("cp_nall")
    if n is None:
        n = _var("cp_nworkers")
    if arr is None or n is None:
        raise CapriceError(
            "caprice: no Caprice runtime here (cp_workers not found; is "
            "libthread loaded, with its debug info?)")
    n = int(n)
    if n <= 0 or int(arr) == 0:
        return []
    out = []
    for i in range(n):
        p = arr[i]
        if int(p) != 0:
            out.append(p.dereference())
    return out


def _runq_threads(q):
    """The threads on a run queue (sched/runq.h): the ring's slots from
    head to tail (empty slots are ones a thief took), then the overflow
    list behind it, then the level lists (priorities, the 2D policy's
    favoured, deferred and held threads)."""
    size = int(q["ring"].type.range()[1]) + 1
    head, tail = int(q["head"]), int(q["tail"])
    out = []
    i = head
    while (tail - i) & 0xffffffff and len(out) <= size:
        p = q["ring"][i & (size - 1)]
        if int(p) != 0:
            out.append(p)
        i = (i + 1) & 0xffffffff
    for i in range(2):  # movable, then pinned (each FIFO)
        out.extend(_chain(q["over"][i]["head"], "next"))
    levels = q["level"]
    for lv in range(int(levels.type.range()[0]), int(levels.type.range()[1]) + 1):
        out.extend(_chain(levels[lv]["head"], "next"))
    return out


def _chain(head, link):
    """Follows a NULL-terminated list of struct cp_thread * by field link."""
    seen = set()
    p = head
    while int(p) != 0 and len(seen) < _MAX_THREADS:
        a = int(p)
        if a in seen:
            break
        seen.add(a)
        yield p
        p = p.dereference()[link]


def _slab_threads():
    """Live records on pooled stacks: each slab of stacks (stackalloc's
    cp_stack_slabs) holds a record at every stack's top, and `live` equals
    cp_live_tag while a thread owns it."""
    slab = _var("cp_stack_slabs")
    rec_size = _var("cp_thread_record_size")
    tag = _var("cp_live_tag")
    if slab is None or rec_size is None or tag is None:
        return
    rec = (int(rec_size) + 63) & ~63
    tag = int(tag)
    tptr = gdb.lookup_type("struct cp_thread").pointer()
    live_off = int(gdb.parse_and_eval("(long)&((struct cp_thread *)0)->live"))
    inf = gdb.selected_inferior()
    seen = 0
    while int(slab) != 0 and seen < _MAX_THREADS:
        s = slab.dereference()
        base, stride = int(s["base"]), int(s["stride"])
        guard, size = int(s["guard"]), int(s["size"])
        for i in range(int(s["count"])):
            top = base + i * stride + guard + size
            addr = (top - rec) & ~63
            try:
                word = int.from_bytes(bytes(inf.read_memory(addr + live_off, 4)), "little")
            except gdb.MemoryError:
                continue
            if word == tag:
                seen += 1
                yield gdb.Value(addr).cast(tptr)
        slab = s["next"]


class UThread(object):
    """One user thread as the listing shows it."""

    def __init__(self, ptr, on_worker, queued=frozenset()):
        self.ptr = ptr                      # struct cp_thread *
        self.addr = int(ptr)
        t = ptr.dereference()
        self.id = int(t["id"])
        self.name = _name(t["name"])
        self.sp = int(t["sp"])
        home = t["home"]
        self.home = int(home.dereference()["index"]) if int(home) != 0 else -1
        # the worker whose kernel thread is running it right now
        self.worker = on_worker
        # no field holds the state: it is where the thread is linked
        if int(t["done"]):
            self.state = "done"
        elif self.worker is not None:
            self.state = "running"
        elif self.addr in queued:
            self.state = "runnable"
        else:
            self.state = "parked"

    @property
    def worker_index(self):
        return int(self.worker["index"]) if self.worker is not None else self.home


def _name(arr):
    try:
        raw = bytes(int(arr[i]) & 0xff for i in range(arr.type.range()[1] + 1))
    except gdb.error:
        return "?"
    raw = raw.split(b"\0", 1)[0]
    return raw.decode("utf-8", "replace")


def threads():
    """All live user threads, ordered by id."""
    ws = _workers()
    running = {}
    for w in ws:
        cur = w["current"]
        if int(cur) != 0 and int(cur) != int(w["idle"].address):
            running[int(cur)] = w
    # runnable: on some worker's run queue or in its inbox
    queued = set()
    for w in ws:
        for p in _runq_threads(w["rq"]):
            queued.add(int(p))
        for p in _chain(w["inbox"], "next"):
            queued.add(int(p))
    found = {}

    def add(p):
        a = int(p)
        if a not in found and a != 0:
            found[a] = UThread(p, running.get(a), queued)

    for p in _slab_threads():
        add(p)
    # threads made off the workers (and those on stacks not from a pool)
    for name in ("cp_shared_registry",):
        shared = _var(name)
        if shared is not None:
            for p in _chain(shared, "reg_next"):
                add(p)
            break
    # a running thread is on some registry; should one not be, it shows anyway
    for w in running.values():
        add(w["current"])
    return sorted(found.values(), key=lambda t: t.id)


def find_thread(spec):
    spec = spec.strip()
    ts = threads()
    if re.match(r"^0x[0-9a-fA-F]+$", spec):
        a = int(spec, 16)
        for t in ts:
            if t.addr == a:
                return t
        raise CapriceError("caprice: no live user thread at %s" % spec)
    if spec.isdigit():
        for t in ts:
            if t.id == int(spec):
                return t
        raise CapriceError("caprice: no live user thread with id %s" % spec)
    hits = [t for t in ts if t.name == spec]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise CapriceError("caprice: %d threads are named %r; give an id (%s)"
                           % (len(hits), spec, ", ".join(str(t.id) for t in hits)))
    raise CapriceError("caprice: no user thread with id or name %r" % spec)


# ------------------------------------------------------------------
# entering a thread's context


def _gdb_thread_for(worker):
    lwp = int(worker["tid"])
    for th in gdb.selected_inferior().threads():
        if th.ptid[1] == lwp:
            return th
    return None


def _address_of(name):
    try:
        return int(gdb.parse_and_eval("(long)&%s" % name))
    except gdb.error:
        return None


def _ctx_switch_ret():
    """The address of cp_ctx_switch's final `ret`, or None.  Resuming a
    saved context there (rsp at the return address) shows cp_ctx_switch as
    frame 0 and its caller with the right line; the default CFI is exact at
    a `ret`."""
    start = _address_of("cp_ctx_switch")
    if start is None:
        return None
    if start in _ret_cache:
        return _ret_cache[start]
    ret = None
    try:
        code = bytes(gdb.selected_inferior().read_memory(start, 96))
        i = code.find(b"\x5d\xc3")          # popq %rbp; ret
        if i >= 0:
            ret = start + i + 1
    except gdb.error:
        pass
    _ret_cache[start] = ret
    return ret


_ret_cache = {}
_SAVED = ("rip", "rsp", "rbp", "rbx", "r12", "r13", "r14", "r15", "eflags")


def _read_reg(frame, name):
    return int(frame.read_register(name)) & 0xffffffffffffffff


def _set_reg(name, value):
    gdb.newest_frame().select()            # frame 0: outer frames' registers
    gdb.execute("set $%s = %d" % (name, value), to_string=True)  # live on the stack


def _select_level(level):
    f = gdb.newest_frame()
    while level > 0 and f.older() is not None:
        f = f.older()
        level -= 1
    f.select()


class _InContext(object):
    """with _InContext(t): gdb's selected thread and frame 0 are t's.

    Running threads: their worker's kernel thread is selected.  Others:
    the selected kernel thread is given t's saved registers, which are put
    back on the way out, with gdb's selected thread and frame."""

    def __init__(self, t):
        self.t = t
        self.saved = None

    def __enter__(self):
        self.orig_thread = gdb.selected_thread()
        if self.orig_thread is None:
            raise CapriceError("caprice: no thread selected (is the program running?)")
        try:
            self.orig_level = gdb.selected_frame().level()
        except gdb.error:
            self.orig_level = None
        t = self.t
        if t.worker is not None:
            th = _gdb_thread_for(t.worker)
            if th is None:
                raise CapriceError("caprice: worker %d's kernel thread (LWP %d) is not "
                                   "known to gdb" % (t.worker_index, int(t.worker["tid"])))
            th.switch()
            gdb.newest_frame().select()
            return self
        if t.state == "done":
            raise CapriceError("caprice: thread %d has finished" % t.id)
        if t.sp == 0:
            raise CapriceError("caprice: thread %d has no saved context" % t.id)
        frame = gdb.newest_frame()
        regs = {}
        for r in _SAVED:
            regs[r] = _read_reg(frame, r)
        try:
            regs["orig_rax"] = _read_reg(frame, "orig_rax")
        except (gdb.error, ValueError):
            pass
        self.saved = regs
        self.thread = self.orig_thread
        inf = gdb.selected_inferior()
        words = memoryview(inf.read_memory(t.sp, 64)).cast("Q")
        new = {"r15": words[1], "r14": words[2], "r13": words[3], "r12": words[4],
               "rbx": words[5], "rbp": words[6]}
        ret = _ctx_switch_ret()
        if words[7] == _address_of("cp_ctx_trampoline"):
            # a context that never ran (cp_ctx_make): frame 0 is the
            # trampoline itself, the outermost frame; as a return address
            # its first byte would be looked up as cp_ctx_switch's last
            new["rsp"], new["rip"] = t.sp + 64, words[7]
        elif ret is not None:
            new["rsp"], new["rip"] = t.sp + 56, ret
        else:
            new["rsp"], new["rip"] = t.sp + 64, words[7]
        try:
            for r in ("rsp", "rbp", "rbx", "r12", "r13", "r14", "r15", "rip"):
                _set_reg(r, new[r])
        except gdb.error as e:
            self._restore()
            raise CapriceError("caprice: cannot load thread %d's registers (%s); "
                               "parked threads can be shown in a live process only"
                               % (t.id, e))
        return self

    def _restore(self):
        if self.saved is None:
            return
        regs, self.saved = self.saved, None
        errors = []
        self.thread.switch()
        for r in ("rsp", "rbp", "rbx", "r12", "r13", "r14", "r15", "rip", "eflags",
                  "orig_rax"):
            if r in regs:
                try:
                    if _read_reg(gdb.newest_frame(), r) != regs[r]:
                        _set_reg(r, regs[r])
                except gdb.error as e:
                    errors.append("%s: %s" % (r, e))
        if errors:
            gdb.write("caprice: could not restore %s\n" % "; ".join(errors), gdb.STDERR)

    def __exit__(self, *exc):
        try:
            self._restore()
        finally:
            try:
                self.orig_thread.switch()
                _select_level(self.orig_level or 0)
            except gdb.error:
                pass
        return False


# ------------------------------------------------------------------
# where a thread waits


def _in_runtime(frame):
    pc = frame.pc()
    return _is_runtime_file(gdb.solib_name(pc))


def _func_name(frame):
    name = frame.name()
    if name is None:
        return "0x%x" % frame.pc()
    for p in ("___interceptor_", "__interceptor_"):
        if name.startswith(p):
            return name[len(p):]
    return name


def _frame_place(frame):
    s = _func_name(frame)
    sal = frame.find_sal()
    if sal.symtab is not None and sal.line:
        s += " at %s:%d" % (os.path.basename(sal.symtab.filename), sal.line)
    elif gdb.solib_name(frame.pc()):
        s += " in %s" % os.path.basename(gdb.solib_name(frame.pc()))
    return s


def _called_name(frame):
    """The function frame's call instruction names (pthread_mutex_lock for
    `call <pthread_mutex_lock@plt>`), or None: the runtime function the
    program called, even when that one tail-called another."""
    pc = frame.pc()
    try:
        arch = frame.architecture()
        for length in (5, 6, 2, 3):         # call rel32, call *m(%rip), register forms
            ins = arch.disassemble(pc - length, count=1)
            if not ins or ins[0]["addr"] + ins[0]["length"] != pc:
                continue
            asm = ins[0]["asm"]
            if not asm.startswith("call"):
                continue
            m = re.findall(r"<([^<>]+)>", asm)
            if not m:
                return None
            name = m[-1].split("@", 1)[0]
            return None if "+" in name else name
    except (gdb.error, ValueError, RuntimeError):
        pass
    return None


def where(t):
    """'pthread_cond_wait <- consumer at prog.c:42': the runtime call a
    thread is in and its caller, or the first frame if not in the runtime."""
    if t.state == "done":
        return "(finished)"
    try:
        with _InContext(t):
            f = gdb.newest_frame()
            entry = None
            depth = 0
            while f is not None and depth < _MAX_WHERE_FRAMES:
                if not _in_runtime(f):
                    place = _frame_place(f)
                    if entry is None:
                        return place
                    return "%s <- %s" % (_called_name(f) or entry, place)
                name = _func_name(f)
                if name == "cp_ctx_trampoline":
                    return "not started yet" + _start_routine(t)
                entry = name
                f = f.older()
                depth += 1
            return "in the runtime (%s)" % (entry or "?")
    except (gdb.error, gdb.GdbError) as e:
        return "? (%s)" % e


def _start_routine(t):
    """' (start: fn)' for a libthread thread that has not run yet."""
    try:
        lt = t.ptr.cast(gdb.lookup_type("struct lt_thread").pointer()).dereference()
        fn = lt["start"]
        if int(fn) == 0:
            return ""
        b = gdb.block_for_pc(int(fn))
        name = b.function.name if b is not None and b.function is not None else "0x%x" % int(fn)
        return " (start: %s)" % name
    except (gdb.error, RuntimeError):
        return ""


# ------------------------------------------------------------------
# commands


def _describe(t):
    w = t.worker_index
    return "Caprice thread %d \"%s\" (%s%s)" % (
        t.id, t.name, t.state, "" if w < 0 else
        (" on worker %d" % w if t.worker is not None else ", last on worker %d" % w))


class CapriceCommand(gdb.Command):
    """Caprice user threads: caprice threads | workers | bt THREAD | apply all CMD.

THREAD is a Caprice thread id (1 = main), a thread name, or a pthread_t (0x...)."""

    def __init__(self):
        super(CapriceCommand, self).__init__("caprice", gdb.COMMAND_STACK, gdb.COMPLETE_NONE,
                                             True)


class CapriceThreads(gdb.Command):
    """List Caprice's user threads: id, name, state, worker, and where each waits.

Usage: caprice threads [-brief]
Where is the runtime call a thread is in and its caller outside the
runtime (e.g. "pthread_cond_wait <- consumer at prog.c:42"); -brief skips
it (it takes a backtrace per thread).  Worker is where a running thread
runs, or where another last ran."""

    def __init__(self):
        super(CapriceThreads, self).__init__("caprice threads", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        brief = False
        for a in args:
            if a in ("-brief", "-b", "--brief"):
                brief = True
            else:
                raise CapriceError("usage: caprice threads [-brief]")
        ts = threads()
        rows = []
        for t in ts:
            w = t.worker_index
            rows.append((str(t.id), t.name or "-", t.state,
                         "-" if w < 0 else str(w), "" if brief else where(t)))
        head = ("Id", "Name", "State", "Worker", "" if brief else "Where")
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
        fmt = "%%%ds  %%-%ds  %%-%ds  %%%ds  %%s\n" % tuple(widths)
        gdb.write((fmt % head).rstrip() + "\n")
        for r in rows:
            gdb.write((fmt % r).rstrip() + "\n")
        if not ts:
            gdb.write("(no user threads: the runtime has not started)\n")


class CapriceWorkers(gdb.Command):
    """List Caprice's workers and what each kernel thread runs.

For each worker: its index, kernel thread (LWP and gdb's thread number),
the user thread it runs (or its scheduler loop), and its run queue length.

Usage: caprice workers"""

    def __init__(self):
        super(CapriceWorkers, self).__init__("caprice workers", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        for w in _workers():
            th = _gdb_thread_for(w)
            cur = w["current"]
            if int(cur) == 0:
                what = "(starting)"
            elif int(cur) == int(w["idle"].address):
                what = "scheduler loop (no user thread)"
            else:
                c = cur.dereference()
                what = "thread %d \"%s\"" % (int(c["id"]), _name(c["name"]))
            gdb.write("%s %d: LWP %d%s, running %s, %d runnable queued\n" % (
                "spare worker" if bool(w["spare"]) else "worker",
                int(w["index"]), int(w["tid"]),
                " (gdb thread %d)" % th.num if th is not None else "",
                what, int(w["rq"]["len"])))


class CapriceBt(gdb.Command):
    """Backtrace of a Caprice user thread.

Usage: caprice bt THREAD [BACKTRACE-ARGS]
THREAD is an id, a name or a pthread_t (0x...); BACKTRACE-ARGS go to
backtrace (e.g. "full", "5").  A thread that is not running is shown from
the context it saved when it was switched out (frame 0: cp_ctx_switch)."""

    def __init__(self):
        super(CapriceBt, self).__init__("caprice bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        parts = arg.strip().split(None, 1)
        if not parts:
            raise CapriceError("usage: caprice bt THREAD [BACKTRACE-ARGS]")
        t = find_thread(parts[0])
        gdb.write(_describe(t) + ":\n")
        with _InContext(t):
            try:
                gdb.execute("backtrace " + (parts[1] if len(parts) > 1 else ""), from_tty)
            except gdb.error as e:
                raise CapriceError(str(e))


class CapriceApply(gdb.Command):
    """Run a gdb command in Caprice user threads' contexts, like thread apply.

Usage: caprice apply all CMD
       caprice apply THREAD... -- CMD   (or: caprice apply THREAD CMD)
Each thread's frame 0 is selected while CMD runs (a switched-out thread's
is cp_ctx_switch: "frame 1" is where it called the runtime).  An error in
CMD is printed and the next thread follows."""

    def __init__(self):
        super(CapriceApply, self).__init__("caprice apply", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        arg = arg.strip()
        if arg.startswith("all ") or arg == "all":
            cmd = arg[3:].strip()
            targets = [t for t in threads() if t.state != "done"]
        elif " -- " in " " + arg + " ":
            specs, cmd = (" " + arg + " ").split(" -- ", 1)
            targets = [find_thread(s) for s in specs.split()]
            cmd = cmd.strip()
        else:
            parts = arg.split(None, 1)
            if len(parts) < 2:
                raise CapriceError("usage: caprice apply all CMD | caprice apply THREAD... -- CMD")
            targets = [find_thread(parts[0])]
            cmd = parts[1]
        if not cmd:
            raise CapriceError("caprice apply: no command given")
        for t in targets:
            gdb.write("\n%s:\n" % _describe(t))
            try:
                with _InContext(t):
                    gdb.execute(cmd, from_tty)
            except (gdb.error, gdb.GdbError) as e:
                gdb.write("%s\n" % e, gdb.STDERR)


def _register():
    CapriceCommand()
    CapriceThreads()
    CapriceWorkers()
    CapriceBt()
    CapriceApply()


# auto-loaded once per library (libthread.so, libthread-preload.so): the
# commands are made once per gdb
if not getattr(gdb, "_caprice_commands", False):
    _register()
    gdb._caprice_commands = True
