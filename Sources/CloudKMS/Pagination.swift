public import KSI

/// Follows a paginated list call (AWS `Marker`/`NextMarker`, GCP `pageToken`/`nextPageToken`,
/// Azure `nextLink`) to its end, or to its bounds: at most `limit` items and `maxPages` pages,
/// so that a keystore with very many keys, or one that keeps answering "more", cannot hold the
/// caller for long. `page` gets the previous page's token (nil first) and returns the items and
/// the next token (nil or empty on the last page).
public func paginated<Item: Sendable>(_ what: String, limit: Int, maxPages: Int = KeyList.maxPages,
                                      _ page: (String?) async throws -> (items: [Item], next: String?)) async throws -> (items: [Item], truncated: Bool) {
    var items: [Item] = []
    var token: String?
    var seen: Set<String> = []
    for _ in 0..<maxPages {
        let answer = try await page(token)
        items += answer.items
        let next = answer.next.flatMap { $0.isEmpty ? nil : $0 }
        if items.count >= limit { return (Array(items.prefix(limit)), items.count > limit || next != nil) }
        guard let next else { return (items, false) }
        // A token seen before would loop for ever: the KMS (or something between) misbehaves.
        guard seen.insert(next).inserted else {
            throw KeystoreError(.unavailable, "\(what) answered the same page token twice; the listing stopped")
        }
        token = next
    }
    return (items, true)
}

/// `transform` over `items`, at most `width` at a time, in the items' order: one DescribeKey
/// (or key GET) per listed key without a thousand requests in flight at once.
public func boundedMap<Item: Sendable, Output: Sendable>(_ items: [Item], width: Int = 8,
                                                         _ transform: @escaping @Sendable (Item) async throws -> Output) async throws -> [Output] {
    try await withThrowingTaskGroup(of: (Int, Output).self) { group in
        var results = [Output?](repeating: nil, count: items.count)
        var next = 0
        while next < min(width, items.count) {
            let index = next, item = items[index]
            group.addTask { (index, try await transform(item)) }
            next += 1
        }
        while let done = try await group.next() {
            results[done.0] = done.1
            if next < items.count {
                let index = next, item = items[index]
                group.addTask { (index, try await transform(item)) }
                next += 1
            }
        }
        return results.map { $0! }
    }
}
