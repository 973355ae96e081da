import Foundation

/// A keyset position `(created_at, id)` in one listing, encoded as base64url JSON. Keyset rather
/// than offset so that a page stays correct while records are added or deleted between
/// requests. The listing name is inside so a tenant cursor cannot be replayed on links.
struct Cursor: Codable, Equatable {
    var listing: String
    var createdAt: Int64
    var id: String

    enum CodingKeys: String, CodingKey {
        case listing = "l", createdAt = "t", id = "i"
    }

    var token: String {
        // Encoding three plain fields cannot fail.
        let json = (try? JSONEncoder().encode(self)) ?? Data()
        return json.base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    init(listing: String, createdAt: Int64, id: String) {
        self.listing = listing
        self.createdAt = createdAt
        self.id = id
    }

    init(token: String, listing: String) throws {
        var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard token.count <= 1024,
              let data = Data(base64Encoded: base64),
              let cursor = try? JSONDecoder().decode(Cursor.self, from: data),
              cursor.listing == listing
        else {
            throw RegistryError(.invalidInput, "the cursor is not one this listing returned")
        }
        self = cursor
    }

    /// Clamps a requested page size into 1...500.
    static func clamp(_ limit: Int) -> Int { min(max(limit, 1), 500) }

    /// Builds a page from up to `limit + 1` rows: the extra row only says there is more.
    static func page<Item>(_ rows: [Item], limit: Int, listing: String,
                           position: (Item) -> (createdAt: Date, id: String)) -> Page<Item> {
        guard rows.count > limit else { return Page(items: rows, nextCursor: nil) }
        let items = Array(rows.prefix(limit))
        let last = position(items[items.count - 1])
        return Page(items: items, nextCursor: Cursor(listing: listing, createdAt: last.createdAt.registryMilliseconds, id: last.id).token)
    }
}
