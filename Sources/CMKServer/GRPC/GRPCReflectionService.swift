import CMKProto
import Foundation
import GRPCCore
import SwiftProtobuf

/// What server reflection knows: every file the server was generated from (ProtoDescriptors,
/// written by Scripts/generate-grpc), indexed by file name and by each symbol it defines.
/// It describes the public schema only (the same .proto files that are in the repository),
/// so it is open like the health service.
final class ReflectionIndex: Sendable {
    let files: [String: Google_Protobuf_FileDescriptorProto]
    let symbols: [String: String]
    /// Extended message → (field number → file).
    let extensions: [String: [Int32: String]]
    let services: [String]

    init(services: [String]) {
        let data = Data(base64Encoded: ProtoDescriptors.fileDescriptorSetBase64) ?? Data()
        let set = (try? Google_Protobuf_FileDescriptorSet(serializedBytes: data)) ?? Google_Protobuf_FileDescriptorSet()
        var files: [String: Google_Protobuf_FileDescriptorProto] = [:]
        var symbols: [String: String] = [:]
        var extensions: [String: [Int32: String]] = [:]
        for file in set.file {
            files[file.name] = file
            let prefix = file.package.isEmpty ? "" : file.package + "."
            func add(_ message: Google_Protobuf_DescriptorProto, _ scope: String) {
                let name = scope + message.name
                symbols[name] = file.name
                for nested in message.nestedType { add(nested, name + ".") }
                for item in message.enumType { symbols[name + "." + item.name] = file.name }
            }
            for message in file.messageType { add(message, prefix) }
            for item in file.enumType { symbols[prefix + item.name] = file.name }
            for service in file.service {
                symbols[prefix + service.name] = file.name
                for method in service.method { symbols[prefix + service.name + "." + method.name] = file.name }
            }
            for field in file.extension {
                let extended = field.extendee.hasPrefix(".") ? String(field.extendee.dropFirst()) : field.extendee
                extensions[extended, default: [:]][field.number] = file.name
                symbols[prefix + field.name] = file.name
            }
        }
        (self.files, self.symbols, self.extensions, self.services) = (files, symbols, extensions, services.sorted())
    }

    /// The file and everything it imports, each once, the file first.
    func closure(of name: String) -> [Data] {
        var seen: Set<String> = []
        var order: [String] = []
        func visit(_ name: String) {
            guard !seen.contains(name), let file = files[name] else { return }
            seen.insert(name)
            order.append(name)
            for dependency in file.dependency { visit(dependency) }
        }
        visit(name)
        return order.compactMap { try? files[$0]?.serializedBytes() }
    }

    enum Answer {
        case files([Data])
        case services([String])
        case extensionNumbers(type: String, [Int32])
        case notFound(String)
    }

    func answer(fileByName name: String) -> Answer {
        files[name] == nil ? .notFound("no file \(name)") : .files(closure(of: name))
    }

    func answer(symbol: String) -> Answer {
        symbols[symbol].map { .files(closure(of: $0)) } ?? .notFound("no symbol \(symbol)")
    }

    func answer(extensionOf type: String, number: Int32) -> Answer {
        extensions[type]?[number].map { .files(closure(of: $0)) } ?? .notFound("no extension \(number) of \(type)")
    }

    func answer(extensionNumbersOf type: String) -> Answer {
        guard symbols[type] != nil else { return .notFound("no type \(type)") }
        return .extensionNumbers(type: type, (extensions[type].map { Array($0.keys) } ?? []).sorted())
    }
}

/// Server reflection, v1 and v1alpha (the same messages): what grpcurl and grpcio-reflection
/// ask for to call the API without the .proto files.
struct ReflectionGRPCService: Grpc_Reflection_V1_ServerReflection.ServiceProtocol {
    let index: ReflectionIndex

    func serverReflectionInfo(request: StreamingServerRequest<Grpc_Reflection_V1_ServerReflectionRequest>, context: ServerContext)
        async throws -> StreamingServerResponse<Grpc_Reflection_V1_ServerReflectionResponse> {
        StreamingServerResponse { writer in
            for try await message in request.messages {
                var response = Grpc_Reflection_V1_ServerReflectionResponse()
                response.validHost = message.host
                response.originalRequest = message
                let answer: ReflectionIndex.Answer = switch message.messageRequest {
                case .fileByFilename(let name): index.answer(fileByName: name)
                case .fileContainingSymbol(let symbol): index.answer(symbol: symbol)
                case .fileContainingExtension(let request): index.answer(extensionOf: request.containingType, number: request.extensionNumber)
                case .allExtensionNumbersOfType(let type): index.answer(extensionNumbersOf: type)
                case .listServices: .services(index.services)
                case nil: .notFound("the request names nothing to look up")
                }
                switch answer {
                case .files(let files): response.fileDescriptorResponse = .with { $0.fileDescriptorProto = files }
                case .services(let names): response.listServicesResponse = .with { $0.service = names.map { name in .with { $0.name = name } } }
                case .extensionNumbers(let type, let numbers):
                    response.allExtensionNumbersResponse = .with { $0.baseTypeName = type; $0.extensionNumber = numbers }
                case .notFound(let text):
                    response.errorResponse = .with { $0.errorCode = Int32(RPCError.Code.notFound.rawValue); $0.errorMessage = text }
                }
                try await writer.write(response)
            }
            return [:]
        }
    }
}

struct ReflectionV1AlphaGRPCService: Grpc_Reflection_V1alpha_ServerReflection.ServiceProtocol {
    let v1: ReflectionGRPCService

    func serverReflectionInfo(request: StreamingServerRequest<Grpc_Reflection_V1alpha_ServerReflectionRequest>, context: ServerContext)
        async throws -> StreamingServerResponse<Grpc_Reflection_V1alpha_ServerReflectionResponse> {
        // The two versions are the same messages in two packages: the bytes of one parse as the other.
        let converted = request.messages.map { try Grpc_Reflection_V1_ServerReflectionRequest(serializedBytes: try $0.serializedBytes() as [UInt8]) }
        let inner = try await v1.serverReflectionInfo(request: StreamingServerRequest(metadata: request.metadata,
                                                                                      messages: RPCAsyncSequence(wrapping: converted)),
                                                      context: context)
        return StreamingServerResponse { writer in
            let relay = RPCWriter(wrapping: ConvertingWriter(writer: writer))
            return try await inner.accepted.get().producer(relay)
        }
    }

    private struct ConvertingWriter: RPCWriterProtocol {
        let writer: RPCWriter<Grpc_Reflection_V1alpha_ServerReflectionResponse>
        func write(_ element: Grpc_Reflection_V1_ServerReflectionResponse) async throws {
            try await writer.write(try Grpc_Reflection_V1alpha_ServerReflectionResponse(serializedBytes: try element.serializedBytes() as [UInt8]))
        }
        func write(contentsOf elements: some Sequence<Grpc_Reflection_V1_ServerReflectionResponse>) async throws {
            for element in elements { try await write(element) }
        }
    }
}
