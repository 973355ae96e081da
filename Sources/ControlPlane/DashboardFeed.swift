import Orbital

/// Wakes every open dashboard when something changed: an administrative change, a node
/// connecting, acknowledging or reporting.
package final class DashboardFeed: Sendable {
    package init() {}

    package enum Signal: Sendable { case changed, heartbeat }

    /// Open feeds per caller (browser tabs) and in all.
    package static let maxPerCaller = 16
    package static let maxTotal = 1024

    private let feeds = Subscribers<Signal>(perOwner: DashboardFeed.maxPerCaller, total: DashboardFeed.maxTotal)

    /// Nil when the caller, or the gateway, has as many feeds open as allowed.
    package func subscribe(for caller: String) -> (AsyncStream<Signal>, @Sendable () -> Void)? {
        feeds.subscribe(caller).map { ($0.signals, $0.end) }
    }

    package func changed() { broadcast(.changed) }

    package func broadcast(_ signal: Signal) { feeds.broadcast(signal) }
}
