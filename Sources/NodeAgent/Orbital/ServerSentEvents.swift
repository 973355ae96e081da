import NIOCore

/// An incremental `text/event-stream` parser (WHATWG HTML §9.2): fields `id`, `event` and
/// `data`, comment lines ignored, a blank line ends a message.
struct ServerSentEvents {
    struct Message: Equatable {
        var id: String?
        var event: String?
        var data: String?
    }

    private var pending: [UInt8] = []
    private var current = Message()

    mutating func feed(_ buffer: ByteBuffer) -> [Message] {
        pending.append(contentsOf: buffer.readableBytesView)
        var messages: [Message] = []
        var start = 0
        while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
            var line = pending[start..<newline]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            start = newline + 1
            if line.isEmpty {
                if current != Message() { messages.append(current) }
                current = Message()
                continue
            }
            if line.first == UInt8(ascii: ":") { continue }
            let text = String(decoding: line, as: UTF8.self)
            let (field, value): (Substring, Substring)
            if let colon = text.firstIndex(of: ":") {
                field = text[..<colon]
                let rest = text[text.index(after: colon)...]
                value = rest.first == " " ? rest.dropFirst() : rest
            } else {
                (field, value) = (Substring(text), "")
            }
            switch field {
            case "id": current.id = String(value)
            case "event": current.event = String(value)
            case "data": current.data = current.data.map { $0 + "\n" + value } ?? String(value)
            default: break
            }
        }
        pending.removeFirst(start)
        return messages
    }
}
