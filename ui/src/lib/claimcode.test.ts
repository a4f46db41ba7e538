import { describe, expect, it } from 'vitest';
import { claimCodeProblem, formatClaimCode, normalizeClaimCode } from './claimcode';

describe('claim codes', () => {
  it.each([
    ['7kq4m-2xdab', '7KQ4M2XDAB'],
    [' 7KQ4M 2XDAB ', '7KQ4M2XDAB'],
    ['OIL', '011'],
  ])('normalizes %s to %s', (input, expected) => expect(normalizeClaimCode(input)).toBe(expected));

  it.each([
    ['7KQ4M-2XDAB', null],
    ['7KQ4M', '5 more characters.'],
    ['7KQ4M2XDA', '1 more character.'],
    ['7KQ4M2XDABC', 'Too long: a claim code has 10 characters.'],
    ['7KQ4M2XDA!', 'Only letters and digits (no U) appear in claim codes.'],
    ['UUUUU-UUUUU', 'Only letters and digits (no U) appear in claim codes.'],
  ])('%s → %s', (input, problem) => expect(claimCodeProblem(input)).toBe(problem));

  it('formats as two groups of five', () => expect(formatClaimCode('7kq4m2xdab')).toBe('7KQ4M-2XDAB'));
});
