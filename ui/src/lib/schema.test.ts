import { describe, expect, it } from 'vitest';
import { paramsFromForm } from './schema';
import type { JsonSchema } from './api';

const schema: JsonSchema = {
  type: 'object',
  properties: {
    seconds: { type: 'integer', minimum: 1, maximum: 3600 },
    label: { type: 'string' },
    fast: { type: 'boolean' },
    mode: { enum: ['eco', 'boost', 3] },
  },
  required: ['seconds'],
};

describe('paramsFromForm', () => {
  it.each([
    [{ seconds: '10' }, { seconds: 10 }, null],
    [{ seconds: 10, label: 'x', fast: true, mode: '3' }, { seconds: 10, label: 'x', fast: true, mode: 3 }, null],
    [{}, {}, 'seconds is required'],
    [{ seconds: '1.5' }, {}, 'seconds must be a whole number'],
    [{ seconds: '0' }, {}, 'seconds must be at least 1'],
    [{ seconds: '9999' }, {}, 'seconds must be at most 3600'],
    [{ seconds: 'abc' }, {}, 'seconds must be a number'],
    [{ seconds: '5', mode: 'turbo' }, { seconds: 5 }, 'mode must be one of eco, boost, 3'],
  ])('%j → %j (%s)', (values, params, error) => {
    const result = paramsFromForm(schema, values as Record<string, string>);
    expect(result.error).toBe(error);
    if (!error) expect(result.params).toEqual(params);
  });
});
