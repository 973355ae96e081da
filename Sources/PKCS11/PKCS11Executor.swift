import Foundation
import NIOConcurrencyHelpers

/// Dedicated threads for blocking PKCS#11 calls, usable as a Swift task executor.
///
/// PKCS#11 calls block (a network HSM takes milliseconds), so they never run on Swift's
/// cooperative pool. Handing each call to a thread pool costs two thread wake-ups per call,
/// which on a virtual machine are expensive (about 170 µs per round trip measured on the
/// project's 2-core test machine, more than a SoftHSM wrap itself). This executor removes the
/// hand-off for callers that opt in: a task that runs with
/// `withTaskExecutorPreference(token.executor)` executes on these threads, and the session
/// pool then calls the module inline, with no wake-up at all. Callers that do not opt in are
/// moved here for the call and back afterwards, as with any thread pool.
public final class PKCS11Executor: TaskExecutor, @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var jobsHead = 0
    private var stopping = false
    private let threadCount: Int
    private let name: String

    /// Identifies the executor whose thread is running, per thread.
    private static let currentKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    public init(name: String, threads: Int) {
        self.name = name
        self.threadCount = max(1, threads)
        for index in 0..<threadCount {
            // Each thread keeps the executor alive until `shutdown()` lets it exit; the pool
            // that owns the executor calls `shutdown()` when it closes or is released.
            let thread = Thread { self.work() }
            thread.name = "\(name)-\(index)"
            thread.start()
        }
    }

    /// Whether the calling thread belongs to any `PKCS11Executor`: a thread made for blocking
    /// work, where other blocking calls (a local SQLite access) are fine too.
    public static var isOnAnyExecutor: Bool { pthread_getspecific(currentKey) != nil }

    /// Whether the calling thread is one of this executor's.
    public var isCurrent: Bool {
        pthread_getspecific(Self.currentKey) == Unmanaged.passUnretained(self).toOpaque()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        condition.lock()
        jobs.append(unowned)
        condition.signal()
        condition.unlock()
    }

    public func asUnownedTaskExecutor() -> UnownedTaskExecutor {
        UnownedTaskExecutor(ordinary: self)
    }

    private func work() {
        pthread_setspecific(Self.currentKey, Unmanaged.passUnretained(self).toOpaque())
        while true {
            condition.lock()
            while jobsHead == jobs.count && !stopping { condition.wait() }
            if jobsHead == jobs.count && stopping {
                condition.unlock()
                return
            }
            let job = jobs[jobsHead]
            jobsHead += 1
            if jobsHead > 1024 && jobsHead * 2 > jobs.count {
                jobs.removeFirst(jobsHead)
                jobsHead = 0
            }
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }

    /// Runs `body` on one of this executor's threads: inline when already on one, otherwise
    /// by moving the task here for the call.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        if isCurrent { return try body() }
        return try await withTaskExecutorPreference(self) { try body() }
    }

    /// Lets the threads finish the queued jobs and exit.
    public func shutdown() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }
}
