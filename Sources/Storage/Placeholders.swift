import Synchronization

/// Rewrites SQLite's `?` placeholders as PostgreSQL's `$1, $2, …`, skipping quoted strings,
/// quoted identifiers and comments. Cached by text: repository SQL is a small fixed set.
enum Placeholders {
    private static let cache = Mutex<[String: String]>([:])

    static func postgres(_ sql: String) -> String {
        if let known = cache.withLock({ $0[sql] }) { return known }
        let rewritten = rewrite(sql)
        cache.withLock { cache in
            if cache.count > 4096 { cache.removeAll() }
            cache[sql] = rewritten
        }
        return rewritten
    }

    static func rewrite(_ sql: String) -> String {
        var out = ""
        out.reserveCapacity(sql.utf8.count + 16)
        var number = 0
        var quote: Character?
        var lineComment = false
        var previous: Character?
        for character in sql {
            defer { previous = character }
            if lineComment {
                out.append(character)
                if character == "\n" { lineComment = false }
                continue
            }
            if let open = quote {
                out.append(character)
                if character == open { quote = nil }
                continue
            }
            switch character {
            case "'", "\"":
                quote = character
                out.append(character)
            case "-" where previous == "-":
                lineComment = true
                out.append(character)
            case "?":
                number += 1
                out.append("$\(number)")
            default:
                out.append(character)
            }
        }
        return out
    }
}
