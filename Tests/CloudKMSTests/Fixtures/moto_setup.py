"""Prepares a moto server started with INITIAL_NO_AUTH_ACTION_COUNT=3 (signatures checked after
three calls): an IAM user allowed everything and one allowed only kms:DescribeKey and
kms:Encrypt, each with an access key, then KMS keys made with the first user's signed calls (three named ones, and twelve for
the listing tests, half of them with an alias).
Prints one JSON object for the tests. Usage: moto_setup.py URL REGION"""
import json, sys
import boto3

url, region = sys.argv[1], sys.argv[2]
def client(service, key_id="unsigned", secret="unsigned"):
    return boto3.client(service, endpoint_url=url, region_name=region, aws_access_key_id=key_id, aws_secret_access_key=secret)

iam = client("iam")
# The three calls moto lets through unauthenticated.
iam.create_user(UserName="cmk-gateway")
iam.put_user_policy(UserName="cmk-gateway", PolicyName="all",
                    PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
admin = iam.create_access_key(UserName="cmk-gateway")["AccessKey"]

iam = client("iam", admin["AccessKeyId"], admin["SecretAccessKey"])
iam.create_user(UserName="cmk-limited")
iam.put_user_policy(UserName="cmk-limited", PolicyName="no-decrypt",
                    PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                        {"Effect": "Allow", "Action": ["kms:DescribeKey", "kms:Encrypt"], "Resource": "*"}]}))
limited = iam.create_access_key(UserName="cmk-limited")["AccessKey"]

kms = client("kms", admin["AccessKeyId"], admin["SecretAccessKey"])
key = kms.create_key(Description="customer L1", KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]
kms.create_alias(AliasName="alias/customer-l1", TargetKeyId=key["KeyId"])
disabled = kms.create_key(Description="disabled")["KeyMetadata"]
kms.disable_key(KeyId=disabled["KeyId"])
signing = kms.create_key(Description="signing", KeyUsage="SIGN_VERIFY", KeySpec="RSA_2048")["KeyMetadata"]
# More keys than a listing test's page: every other one named by an alias.
for index in range(12):
    made = kms.create_key(Description=f"listing {index}", KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]
    if index % 2 == 0:
        kms.create_alias(AliasName=f"alias/listing-{index:02d}", TargetKeyId=made["KeyId"])
print(json.dumps({
    "accessKeyID": admin["AccessKeyId"], "secretAccessKey": admin["SecretAccessKey"],
    "limitedAccessKeyID": limited["AccessKeyId"], "limitedSecretAccessKey": limited["SecretAccessKey"],
    "keyARN": key["Arn"], "keyID": key["KeyId"], "aliasName": "alias/customer-l1",
    "aliasARN": key["Arn"].rsplit(":", 1)[0] + ":alias/customer-l1",
    "disabledKeyARN": disabled["Arn"], "signingKeyARN": signing["Arn"], "listingKeys": 12,
}))
