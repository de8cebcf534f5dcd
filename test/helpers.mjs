// helpers.mjs: assertions shared by the uvu suites: an error of a given type whose message
// matches a pattern (RegExp) or equals a string. Both return the error for further checks.
import * as assert from 'uvu/assert';

function checkError(caught, ErrorType, expected) {
  assert.ok(caught, `expected an error matching ${expected}`);
  assert.instance(caught, ErrorType);
  if (expected instanceof RegExp) assert.match(caught.message, expected);
  else assert.is(caught.message, expected);
  return caught;
}

export function throwsMessage(fn, ErrorType, expected) {
  let caught;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  return checkError(caught, ErrorType, expected);
}

export async function rejectsMessage(promise, ErrorType, expected) {
  let caught;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  return checkError(caught, ErrorType, expected);
}
