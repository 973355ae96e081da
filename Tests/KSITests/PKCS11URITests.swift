import Testing
@testable import KSI

/// RFC 7512 §3.3's examples, and the errors the parser must raise.
@Suite struct PKCS11URITests {
    @Test func emptyURIIsValid() throws {
        let uri = try PKCS11URI(parsing: "pkcs11:")
        #expect(uri.token == nil && uri.object == nil && uri.description == "pkcs11:")
    }

    @Test func rfcExamples() throws {
        var uri = try PKCS11URI(parsing: "pkcs11:object=my-pubkey;type=public")
        #expect(uri.object == "my-pubkey" && uri.type == "public")

        uri = try PKCS11URI(parsing: "pkcs11:object=my-key;type=private?pin-source=file:/etc/token")
        #expect(uri.pinSource == "file:/etc/token")

        uri = try PKCS11URI(parsing: "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=?pin-source=file:/etc/token_pin")
        #expect(uri.token == "The Software PKCS#11 Softtoken")
        #expect(uri.manufacturer == "Snake Oil, Inc.")
        #expect(uri.model == "1.0")
        #expect(uri.type == "cert")
        #expect(uri.id == [0x69, 0x95, 0x3E, 0x5C, 0xF4, 0xBD, 0xEC, 0x91])
        #expect(uri.serial == "")
        #expect(uri.pinSource == "file:/etc/token_pin")

        uri = try PKCS11URI(parsing: "pkcs11:object=my-sign-key;type=private?module-name=mypkcs11")
        #expect(uri.moduleName == "mypkcs11")

        uri = try PKCS11URI(parsing: "pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1")
        #expect(uri.modulePath == "/mnt/libmypkcs11.so.1")

        uri = try PKCS11URI(parsing: "pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin")
        #expect(uri.pinValue == "the-pin")
        #expect(!uri.description.contains("the-pin"), "a PIN value is never printed back")

        uri = try PKCS11URI(parsing: "pkcs11:slot-description=Sun%20Metaslot")
        #expect(uri.slotDescription == "Sun Metaslot")

        uri = try PKCS11URI(parsing: "pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20Library;library-version=1.23")
        #expect(uri.libraryManufacturer == "Snake Oil, Inc.")
        #expect(uri.libraryDescription == "Soft Token Library")
        #expect(uri.libraryVersion == "1.23")

        uri = try PKCS11URI(parsing: "pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;id=%01%02%03%Ba%dd%Ca%fe%04%05%06")
        #expect(uri.token == "My token% created by Joe")
        #expect(uri.libraryVersion == "3")
        #expect(uri.id == [0x01, 0x02, 0x03, 0xBA, 0xDD, 0xCA, 0xFE, 0x04, 0x05, 0x06])

        uri = try PKCS11URI(parsing: "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert")
        #expect(uri.token == "A name with a substring %;")

        uri = try PKCS11URI(parsing: "pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;type=cert")
        #expect(uri.token == "Name with a small A with acute: á")

        uri = try PKCS11URI(parsing: "pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a?pin-source=file:/etc/token_pin&vendor-bbb=value-b")
        #expect(uri.vendorPath.map(\.name) == ["vendor-aaa"] && uri.vendorPath.map(\.value) == ["value-a"])
        #expect(uri.vendorQuery.map(\.name) == ["vendor-bbb"])
    }

    @Test func reservedCharactersAllowedUnencoded() throws {
        let uri = try PKCS11URI(parsing: "pkcs11:token=:[]@!$'()*+,=&?pin-source=:[]@!$'()*+,=/?|")
        #expect(uri.token == ":[]@!$'()*+,=&")
        #expect(uri.pinSource == ":[]@!$'()*+,=/?|")
    }

    @Test(arguments: [
        "pkcs11:token=acme;object=root;type=secret-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:HSM_PIN",
        "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;object=a%3Bb;id=%00%FF",
        "pkcs11:token=%C3%A1%25;serial=0123;slot-id=7",
    ])
    func descriptionRoundTrips(text: String) throws {
        let uri = try PKCS11URI(parsing: text)
        #expect(try PKCS11URI(parsing: uri.description) == uri)
    }

    @Test(arguments: [
        ("token=acme", "starts with"),
        ("http://example.com", "starts with"),
        ("pkcs11:token=a;token=b", "more than once"),
        ("pkcs11:object=root?pin-source=a&pin-source=b", "more than once"),
        ("pkcs11:token=a b", "a space"),
        ("pkcs11:token=a%2", "two hex digits"),
        ("pkcs11:token=a%zz", "two hex digits"),
        ("pkcs11:type=secret", "type must be"),
        ("pkcs11:token", "no \"=\""),
        ("pkcs11:=x", "not a valid"),
        ("pkcs11:token=%FF%FE", "UTF-8"),
        ("pkcs11:slot-id=abc", "decimal"),
        ("pkcs11:library-version=1.2.3", "MAJOR"),
        ("pkcs11:token=a#frag", "fragment"),
        ("pkcs11:token=a;b", "no \"=\""),
    ])
    func malformedURIsAreRejectedWithAReason(text: String, reason: String) {
        let error = #expect(throws: PKCS11URI.ParseError.self) { try PKCS11URI(parsing: text) }
        #expect(error?.message.contains(reason) == true, "\(error?.message ?? "no error") should mention \(reason)")
    }

    @Test func oversizedURIIsRejected() {
        #expect(throws: PKCS11URI.ParseError.self) { try PKCS11URI(parsing: "pkcs11:object=" + String(repeating: "a", count: 5000)) }
    }

    @Test func gatewayRefusesWhatItCannotHonour() {
        for text in ["pkcs11:token=a;object=b?pin-value=1234", "pkcs11:token=a;object=b;x-vendor=1",
                     "pkcs11:token=a;object=b;slot-id=3", "pkcs11:token=a;object=b?x-q=1"] {
            #expect(throws: KeystoreError(.invalidInput, "")) { try PKCS11Token.checkUsable(try PKCS11URI(parsing: text)) }
        }
        #expect(throws: KeystoreError(.invalidInput, "")) { try KeyReference(parsing: "arn:aws:kms:eu-west-1:1:key/x") }
    }
}
