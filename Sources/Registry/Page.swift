import Foundation

/// One page of a listing. Pass `nextCursor` back to get the next page; nil means there is none
/// (a listing never ends with an empty page).
public struct Page<Item: Sendable>: Sendable {
    public var items: [Item]
    /// Opaque to callers.
    public var nextCursor: String?

    public init(items: [Item], nextCursor: String?) {
        self.items = items
        self.nextCursor = nextCursor
    }
}
