/**
 * The known answers the compartment checks at every instantiation of the guest, before any real
 * key goes in (`compartment.ts`). The keys below were made for this test alone with
 * `openssl genpkey` and sign nothing else: they are public test vectors, not secrets.
 *
 * - RSA-2048 PKCS#1 v1.5 is deterministic: the guest's signature of {@linkcode SELF_TEST_DIGEST}
 *   must be {@linkcode SELF_TEST_RSA_SIGNATURE} byte for byte (made by `openssl pkeyutl -sign
 *   -pkeyopt digest:sha256`). That runs the modular exponentiation, CRT and Montgomery code.
 * - P-256 and P-384 keys are given as SEC1 without their public point, so loading one makes the
 *   guest compute it (scalar times base point, the multiplication every ECDSA signature starts
 *   with); the key id it answers, SHA-256 of the SubjectPublicKeyInfo, must be the one openssl
 *   computed. Each then signs the digest: ECDSA is randomized, so the answer is not compared,
 *   but the wide guest verifies each ECDSA signature itself before answering.
 *
 * @module
 */

const fromHex = (hex: string) =>
  Uint8Array.from(hex.match(/../g)!, (b) => parseInt(b, 16));
const fromBase64 = (b64: string) =>
  Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));

/** SHA-256 of "keycell guest self-test v1". */
export const SELF_TEST_DIGEST = fromHex(
  "d0671d3fd50f4f5f59a88444de102a5c0bd338afed85217b7dab59d3e6e5ddc8",
);

/** A test key, what the guest must answer for it, and how it signs. */
export interface SelfTestKey {
  name: string;
  /** Private key bytes as `kc_load` takes them. */
  der: Uint8Array;
  /** The key id: SHA-256 of the SubjectPublicKeyInfo DER. */
  id: Uint8Array;
  /** The algorithm code the self-test signs with. */
  alg: number;
  /** The signature of {@linkcode SELF_TEST_DIGEST}, when it is deterministic. */
  signature?: Uint8Array;
}

/** RSA-2048, PKCS#8 DER. */
const RSA_2048 = fromBase64(
  "MIIEpAIBAAKCAQEAv2mjt/ovQNZd5Sym6at/b68dUz3cPjAnzwHOmBToHEZprCOtruxmsatjHztjM9br4x4e/KZ31VAIHmyQXrnKDqXfRpDKrXagsYI2gOg7DkZcHQ99uX/uMDdAnuPo46qyZcKlmWBlfesJi1/tCS4GfdfrdEaZFkjsEZaOvd+Cf4HBwoXxgWYMp5LwMpDCMDk6VmIs4SNoC1wDumR8Jk/BcJBrbDisjXB3U51QPwRb+yhWpFylAlmjGjJoqnjK5hUM7UUxrbqIIhlFGqOjE7kvHyNLSNVIfM3mj2O/uVbcyadgutnxDkVUVuEfp4IeCWSH1x4ookVh+lG38kMXBOk0AwIDAQABAoIBAEet6a9VsyhWnmbZ58+Nd3V9YD/x5G4tXlr41ELDYYBlJeFeowXkZTiXc9EYTjf1ffRZLUVzmWB6TfAGu7GdZXtCxnAIfL2ktNyEZKC1Vpgr5QbE7FHxBGNt7XcS5f2LyK6uy5C6NoeG4tYcoAlWAPxTRUsPvPhJao3TkbSs5JOWgAlxXDg7oGYcirvvDT9z61Z6rCmJLThLlVWNXwHyx/1ounOpxoeNkfropDDIH+6hlV7GMIBrWZKSwc9y0/9bmeF/IXtfXGgRN20GOuEBWUIW6CGCTQVvqJG7CmyFI2MOzLnATINMOBOpUmzbPbfsfY2SzXuziQun24xBuHVkLPECgYEA37P5Zbq6ZWbRhvDQgsIsBIFR/JpocX2QVoZhN2yz1rLtxtnOQsgcx9V/8CmNPVfTmzrBQoHWC1uGI97DIct0SRig5Tgvia3nGLEVdeYstfZe3t0nt7tCSdZe7md4Mju7UAyKANIm8UIWq+jksA8PRVXDc2oLHhhTvhP9PCBeGH8CgYEA2ww3/rsipQtWpoYuY0lnySLWX2w0qk7d6fvYKUxgddkPxkKi4pc9w6P5IFBrKH95UwkFBILvg1JPraWhI1AUxEc017WEvNPPtY7Rn/2Vi6t88oS6nqHT5k9gcVu4qAHUnkmpj0WFGSBAHS97oHkcRQzAdnCmMsjCoaQN2nwZwn0CgYEAzo+d85yHbwiQ4txMfOEUyhgrf2eIl3sNI4g0DnyWVuKjgqEtvyaOxMtUtot3urP1Vfnb6DCBV71sUITqg7MdLj3Km73Uz3m/0WH64gHnOSJEmd92REZqQEntIJB0QVY8cP8TEwz6Hn4a9yQ2voc5X5mAv3qkx2ZJNVO52qI8oLsCgYEAvl0ZELSbQCnhbSjxiXHS03cGLLmB73xI2T74NbPdpK02S0u/+QINOEf5ir640eIukx4kkS4lbtAK1NM7fc/rrERhxRFIQT4mphdvUAZ2f4JSPQVildf3qpDTNNDMYp3spH9J72wwZoyji3mni+eUzOFvJb9ygHH+y7EiJP1y+ZUCgYAQHFSjhuSwmxpl1QQ5qyo2AKIX1tmMGIwHjfnmNVDRg+CWOcEiRJZ0lSX5pHeEdG5RQ2Ldqsu+SrVNrkBmGFSMsxgbaSK4KKnxwHWOo405jpGjzbqo93eDAm4+IXScTLuXkRhkn18GNoV6/F13/K1lhWydImsRbzHTEal9ZPocqw==",
);

/** The RSA key's PKCS#1 v1.5 SHA-256 signature of {@linkcode SELF_TEST_DIGEST}. */
export const SELF_TEST_RSA_SIGNATURE = fromBase64(
  "UnyUN2MrPXWycznXZu/hwyXNMQ+nmwe+KBJDG3mst34FJmEfVfeZh7zwldGpXnsa15kxuPrkxkOH+Qzha1g3E0fLbu9+wRIrx4WXLiO6UudggcGHXzAQk5axcStGAgr/k5bPtZoAc9IAHXXoepW6LWzBeHpyf+i4jXu9ghNmhmJ0hy4V/kzaIA3IF8S7cGdKFeYYyGKy0RV9cK2MCruqNtEM1NRdsKrOITBVuoKybRLakx1z+TJK9xyCpwT1a3GMqdoQOvMyKcj24GnClX1D2kGR3k6aFdOERqBc1O9gTZ//aeeIHO4hUbPqDh+oDmUTwgNwKXyx1afgfVuHbUXCjg==",
);

/** SEC1 ECPrivateKey DER with the curve and no public key: `30 len 02 01 01 04 n d a0 len oid`. */
function sec1(scalarHex: string, curveOid: string): Uint8Array {
  const d = fromHex(scalarHex);
  const oid = fromHex(curveOid);
  const body = [
    0x02,
    0x01,
    0x01,
    0x04,
    d.length,
    ...d,
    0xa0,
    oid.length + 2,
    0x06,
    oid.length,
    ...oid,
  ];
  return new Uint8Array([0x30, body.length, ...body]);
}

/** The keys of the self-test, in the order it runs them. */
export const SELF_TEST_KEYS: readonly SelfTestKey[] = [
  {
    name: "RSA-2048 PKCS#1 v1.5",
    der: RSA_2048,
    id: fromHex(
      "d2124157576eb28d04bd651c09cda119d74a741156664064efe19c8b63e9274e",
    ),
    alg: 1, // RSASSA_PKCS1_V1_5_SHA_256
    signature: SELF_TEST_RSA_SIGNATURE,
  },
  {
    name: "P-256",
    der: sec1(
      "e9715018a2cc7efc5e13db67bb7503bc0820d00afedcc9a1f27c7bc016b8bd08",
      "2a8648ce3d030107",
    ),
    id: fromHex(
      "cd7e0ccb7d3d2a078c44f674f7acd6cf005048af630bb462c4ac4ad2f80cf6fb",
    ),
    alg: 7, // ECDSA_SHA_256
  },
  {
    name: "P-384",
    der: sec1(
      "0100974cbd371907e5a70177abe4eb63aba214544246339e7ce50f889d67e4b68381ffba7cdcdfef78aa037a2cdde61d",
      "2b81040022",
    ),
    id: fromHex(
      "b82bf032037cd16a01c21fc748315e07b07b4f566e26977a03cabae408cf75ff",
    ),
    alg: 7, // ECDSA_SHA_256: any ECDSA algorithm signs with either curve
  },
];
