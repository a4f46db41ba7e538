// Claim codes as people type them: 10 characters of Crockford base32 shown as XXXXX-XXXXX.
// Case, spaces and dashes are ignored; I/L read as 1 and O as 0, as the gateway does.

const ALPHABET = /^[0-9A-HJKMNP-TV-Z]*$/;

export function normalizeClaimCode(input: string): string {
  return input.toUpperCase().replace(/[\s-]/g, '').replace(/[IL]/g, '1').replace(/O/g, '0');
}

/** null when the code can be sent, else what is wrong with it. */
export function claimCodeProblem(input: string): string | null {
  const code = normalizeClaimCode(input);
  if (!ALPHABET.test(code)) return 'Only letters and digits (no U) appear in claim codes.';
  if (code.length < 10) return `${10 - code.length} more character${code.length === 9 ? '' : 's'}.`;
  if (code.length > 10) return 'Too long: a claim code has 10 characters.';
  return null;
}

export function formatClaimCode(input: string): string {
  const code = normalizeClaimCode(input);
  return code.length > 5 ? `${code.slice(0, 5)}-${code.slice(5)}` : code;
}
